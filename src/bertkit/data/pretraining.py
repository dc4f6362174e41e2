"""Pretraining examples: sentence pairs (NSP or SOP) or packed full sentences, and masked-LM corruption.

The offline half, run once in ``prepare`` and stored in shards, depends on the architecture's sentence objective
(:data:`ARCH_OBJECTIVES`):

* ``"nsp"`` (BERT, paper section 3.1, appendix A.1): :func:`make_instances` turns a document into
  ``[CLS] A [SEP] B [SEP]`` pairs where B is the true continuation of A (IsNext, label 0) or a span from another
  document (NotNext, label 1).
* ``"sop"`` (ALBERT, section 4.2): :func:`make_sop_instances` takes two consecutive segments of one document and
  swaps them half the time (label 0 = in order, 1 = swapped), so the task is about order, not topic.
* ``"none"`` (RoBERTa's FULL-SENTENCES, section 4.2): :func:`pack_full_sentences` fills each sequence with whole
  sentences read contiguously, crossing document boundaries with an extra separator, and has no sentence label.

Every objective stores the same instance format (token ids, the length of segment A, one label), so shards, the
reader and the batches do not branch on it.

The online half, :func:`mask_tokens`, picks 15% of the tokens to predict and corrupts them 80/10/10. It runs on
every batch, with an rng derived from (seed, epoch, batch, rank), so each epoch sees a fresh corruption of the same
instances: this is RoBERTa's *dynamic masking* (section 4.1), used for every architecture here; none of them stores
a masking in its shards.

:class:`PretrainingBatches` joins a shard set and the masking into the random-access batch source the training loop
consumes. All randomness comes from a ``numpy.random.Generator`` passed in or derived from an explicit seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bertkit.config import IGNORE
from bertkit.data.shards import ShardSet
from bertkit.variants import VARIANTS

# The sentence-level objective each architecture pretrains with; "none" is masked-LM alone. DistilBERT is mainly
# trained by distillation (which reads shards of either kind); pretrained on its own it has no sentence task.
ARCH_OBJECTIVES: dict[str, str] = {v.model_type: v.sentence_task or "none" for v in VARIANTS.values()}


def objective_for(arch: str) -> str:
    """The sentence objective of an architecture (``model_type``): "nsp", "sop" or "none"."""
    if arch not in ARCH_OBJECTIVES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCH_OBJECTIVES)}")
    return ARCH_OBJECTIVES[arch]


@dataclass(frozen=True)
class Instance:
    """One pretraining sequence. ``ids`` is ``[CLS] A [SEP] B [SEP]`` for pairs and ``<s> ... </s>`` for packed
    sentences; ``a_len`` counts ``[CLS] A [SEP]`` (token type 0; the whole sequence when it has one segment).
    ``label`` is the sentence-task label: NSP 1 = NotNext, SOP 1 = swapped, always 0 without a sentence task."""

    ids: list[int]
    a_len: int
    label: int


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """Trim the longer segment one token at a time, from a random end, until ``len(a) + len(b) <= max_tokens``.

    Random ends avoid teaching the model that segments always stop (or start) at sentence boundaries.
    """
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _random_span(
    documents: Sequence[Sequence[Sequence[int]]], doc_index: int, target: int, rng: np.random.Generator
) -> list[int]:
    """Contiguous sentences (about ``target`` tokens) from a random start in another document of the window."""
    if len(documents) < 2:
        return []
    other = int(rng.integers(len(documents) - 1))
    other += other >= doc_index  # uniform over every document but ``doc_index``
    sentences = documents[other]
    if not sentences:
        return []
    span: list[int] = []
    for sentence in sentences[int(rng.integers(len(sentences))) :]:
        span.extend(sentence)
        if len(span) >= target:
            break
    return span


def _split_chunk(
    chunk: list[Sequence[int]], rng: np.random.Generator
) -> tuple[list[int], list[int] | None, int]:
    """Segment A and its true continuation B from a chunk of sentences; returns (A, B, sentences used by A).

    A chunk of one sentence is cut at a random token so it can still give an IsNext pair (B is None when the
    sentence is a single token).
    """
    if len(chunk) >= 2:
        a_end = int(rng.integers(1, len(chunk)))
        a = [t for s in chunk[:a_end] for t in s]
        return a, [t for s in chunk[a_end:] for t in s], a_end
    only = list(chunk[0])
    if len(only) < 2:
        return only, None, 1
    cut = int(rng.integers(1, len(only)))
    return only[:cut], only[cut:], 1


def _instances_from_chunks(
    document: Sequence[Sequence[int]],
    rng: np.random.Generator,
    max_seq_len: int,
    short_seq_prob: float,
    pair_from_chunk: Callable[[list[Sequence[int]], int], tuple[Instance | None, int]],
) -> list[Instance]:
    """BERT's walk over a document: gather sentences until they reach a target length, make a pair of the chunk.

    The target is ``max_seq_len - 3``, or with probability ``short_seq_prob`` a random shorter length, so the model
    also sees short inputs. ``pair_from_chunk(chunk, target)`` returns the instance (or None) and how many trailing
    sentences of the chunk it left unused; those start the next chunk.
    """
    if max_seq_len < 5:
        raise ValueError(f"max_seq_len must be at least 5 to hold [CLS] A [SEP] B [SEP], got {max_seq_len}")
    sentences = [s for s in document if len(s) > 0]
    max_tokens = max_seq_len - 3
    target = int(rng.integers(2, max_tokens + 1)) if rng.random() < short_seq_prob else max_tokens
    instances: list[Instance] = []
    chunk: list[Sequence[int]] = []
    chunk_len, i = 0, 0
    while i < len(sentences):
        chunk.append(sentences[i])
        chunk_len += len(sentences[i])
        if i == len(sentences) - 1 or chunk_len >= target:
            instance, unused = pair_from_chunk(chunk, target)
            if instance is not None:
                instances.append(instance)
            i -= unused
            chunk, chunk_len = [], 0
        i += 1
    return instances


def make_instances(
    documents: Sequence[Sequence[Sequence[int]]],
    doc_index: int,
    rng: np.random.Generator,
    max_seq_len: int,
    short_seq_prob: float = 0.1,
    *,
    cls_id: int,
    sep_id: int,
) -> list[Instance]:
    """NSP instances from ``documents[doc_index]`` (documents -> sentences -> token ids, without special tokens).

    As in BERT: a random split of each chunk of sentences gives A; B is the rest of the chunk (IsNext) or, half the
    time, a span of another document (NotNext), whose unused sentences are put back for the next instance.
    ``documents`` is the window of documents the caller holds in memory; NotNext spans are drawn from it, so a
    streamed corpus never needs to be held whole. A window of one document yields only IsNext pairs.

    Returns:
        list of :class:`Instance`, each with ``len(ids) <= max_seq_len``.
    """
    max_tokens = max_seq_len - 3

    def pair(chunk: list[Sequence[int]], target: int) -> tuple[Instance | None, int]:
        return _pair_from_chunk(chunk, documents, doc_index, target, rng, cls_id, sep_id, max_tokens)

    return _instances_from_chunks(documents[doc_index], rng, max_seq_len, short_seq_prob, pair)


def _pair_from_chunk(
    chunk: list[Sequence[int]],
    documents: Sequence[Sequence[Sequence[int]]],
    doc_index: int,
    target: int,
    rng: np.random.Generator,
    cls_id: int,
    sep_id: int,
    max_tokens: int,
) -> tuple[Instance | None, int]:
    """One NSP instance from a chunk; also returns how many trailing chunk sentences went unused (to be revisited)."""
    a, b, a_sentences = _split_chunk(chunk, rng)
    is_random_next = b is None or rng.random() < 0.5
    unused = 0
    if is_random_next:
        span = _random_span(documents, doc_index, max(1, target - len(a)), rng)
        if span:
            b, unused = span, len(chunk) - a_sentences
        else:  # no other document in the window: keep the true continuation (if any)
            is_random_next = False
    if b is None:
        return None, unused
    _truncate_pair(a, b, max_tokens, rng)
    if not a or not b:
        return None, unused
    ids = [cls_id, *a, sep_id, *b, sep_id]
    return Instance(ids=ids, a_len=len(a) + 2, label=int(is_random_next)), unused


def make_sop_instances(
    document: Sequence[Sequence[int]],
    rng: np.random.Generator,
    max_seq_len: int,
    short_seq_prob: float = 0.1,
    *,
    cls_id: int,
    sep_id: int,
) -> list[Instance]:
    """ALBERT's sentence-order instances from one document (sentences -> token ids, without special tokens).

    Chunks are gathered as for NSP; A and B are always two consecutive segments of the chunk, and with probability
    0.5 they are swapped (``[CLS] B [SEP] A [SEP]``, label 1; in order, label 0). Both segments come from the same
    document, so topic gives nothing away: only the order of the text does. No other document is needed.

    Returns:
        list of :class:`Instance`, each with ``len(ids) <= max_seq_len``.
    """
    max_tokens = max_seq_len - 3

    def pair(chunk: list[Sequence[int]], target: int) -> tuple[Instance | None, int]:
        a, b, _ = _split_chunk(chunk, rng)
        if b is None:
            return None, 0
        swapped = rng.random() < 0.5
        if swapped:
            a, b = b, a
        _truncate_pair(a, b, max_tokens, rng)
        if not a or not b:
            return None, 0
        return Instance(ids=[cls_id, *a, sep_id, *b, sep_id], a_len=len(a) + 2, label=int(swapped)), 0

    return _instances_from_chunks(document, rng, max_seq_len, short_seq_prob, pair)


def pack_full_sentences(
    documents: Sequence[Sequence[Sequence[int]]], max_seq_len: int, *, cls_id: int, sep_id: int
) -> list[Instance]:
    """RoBERTa's FULL-SENTENCES sequences: ``<s> sentences ... </s>``, read contiguously across documents.

    Whole sentences are appended while they fit in ``max_seq_len - 2`` tokens; a document that starts inside a
    sequence is preceded by one extra separator (``sep_id``, i.e. ``</s>``). A sentence longer than a whole sequence
    is cut into consecutive pieces rather than dropped, so every token of ``documents`` appears exactly once, in
    order. Packing involves no randomness (RoBERTa's sequences are fixed; the epoch order and the masking vary), so
    it takes no rng. Every sequence is one segment (``a_len == len(ids)``) with label 0.

    Returns:
        list of :class:`Instance`, each with ``len(ids) <= max_seq_len``; only the last may be much shorter.
    """
    if max_seq_len < 3:
        raise ValueError(f"max_seq_len must be at least 3 to hold <s> x </s>, got {max_seq_len}")
    capacity = max_seq_len - 2
    instances: list[Instance] = []
    body: list[int] = []

    def flush() -> None:
        if body:
            instances.append(Instance(ids=[cls_id, *body, sep_id], a_len=len(body) + 2, label=0))
            body.clear()

    for document in documents:
        starts_document = True
        for sentence in document:
            for begin in range(0, len(sentence), capacity):
                piece = sentence[begin : begin + capacity]
                separator = int(starts_document and bool(body))
                if len(body) + separator + len(piece) > capacity:
                    flush()
                    separator = 0
                if separator:
                    body.append(sep_id)
                body.extend(piece)
                starts_document = False
    flush()
    return instances


def _num_to_predict(candidates: np.ndarray, mlm_prob: float, max_predictions: int | None) -> np.ndarray:
    """Per row: round(mlm_prob * #candidates), at least 1 when there is a candidate, at most ``max_predictions``."""
    k = np.maximum(np.rint(candidates * mlm_prob), np.minimum(candidates, 1)).astype(np.int64)
    return k if max_predictions is None else np.minimum(k, max_predictions)


def _choose_tokens(special: np.ndarray, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exactly k[b] random non-special positions per row: rank random scores, specials pushed last. (B, T) bool."""
    scores = np.where(special, 2.0, rng.random(special.shape))
    ranks = np.argsort(np.argsort(scores, axis=1), axis=1)
    return (ranks < k[:, None]) & ~special


def _choose_whole_words(
    special: np.ndarray, word_starts: np.ndarray, k: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Whole words in random order, skipping any that would overshoot k[b] tokens (as BERT's WWM). (B, T) bool."""
    chosen = np.zeros(special.shape, dtype=bool)
    for row in range(special.shape[0]):
        positions = np.flatnonzero(~special[row])
        if len(positions) == 0:
            continue
        # A word also starts wherever candidates are not adjacent (after [SEP], or a truncated continuation piece).
        starts = word_starts[row, positions].astype(bool) | (np.diff(positions, prepend=-2) != 1)
        word_of = np.cumsum(starts) - 1  # (n_candidates,) word index of each candidate position
        lengths = np.bincount(word_of)
        picked, budget = np.zeros(len(lengths), dtype=bool), int(k[row])
        for word in rng.permutation(len(lengths)):
            if budget == 0:
                break
            if lengths[word] <= budget:
                picked[word], budget = True, budget - int(lengths[word])
        chosen[row, positions[picked[word_of]]] = True
    return chosen


def mask_tokens(
    ids: np.ndarray,
    special_mask: np.ndarray,
    rng: np.random.Generator,
    vocab_size: int,
    mask_id: int,
    mlm_prob: float = 0.15,
    max_predictions: int | None = None,
    whole_word: bool = False,
    word_starts: np.ndarray | None = None,
    special_ids: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masked-LM corruption of a batch.

    ``mlm_prob`` of the non-special tokens of each row are chosen (rounded; at most ``max_predictions``); each chosen
    token becomes ``mask_id`` with probability 0.8, a random non-special token with 0.1, and stays as it is with 0.1,
    so the model cannot rely on ``[MASK]`` marking the positions it is scored on. With ``whole_word`` the choice is
    made over words (a start token and its continuation pieces together), given by ``word_starts``; these come from
    the tokenizer's ``continuation_mask``, so whole words are WordPiece's "##" pieces, byte-level BPE's tokens
    without "Ġ" and SentencePiece's without "▁" alike.

    Args:
        ids: (B, T) or (T,) integer token ids.
        special_mask: same shape, True at [CLS]/[SEP]/padding (never chosen).
        word_starts: same shape, True where a token starts a word; required with ``whole_word``.
        special_ids: ids a random replacement must avoid.

    Returns:
        (masked_ids, labels), both shaped like ``ids``; labels hold the original id at chosen positions and -100
        elsewhere.
    """
    ids = np.asarray(ids)
    single = ids.ndim == 1
    ids2 = np.atleast_2d(ids)
    special = np.atleast_2d(np.asarray(special_mask, dtype=bool))
    k = _num_to_predict((~special).sum(axis=1), mlm_prob, max_predictions)
    if whole_word:
        if word_starts is None:
            raise ValueError("whole_word masking needs word_starts")
        chosen = _choose_whole_words(special, np.atleast_2d(word_starts), k, rng)
    else:
        chosen = _choose_tokens(special, k, rng)
    labels = np.where(chosen, ids2, IGNORE)
    masked = ids2.copy()
    roll = rng.random(ids2.shape)
    masked[chosen & (roll < 0.8)] = mask_id
    randomised = chosen & (roll >= 0.8) & (roll < 0.9)
    replacements = np.setdiff1d(np.arange(vocab_size), np.asarray(special_ids, dtype=np.int64))
    masked[randomised] = replacements[rng.integers(len(replacements), size=int(randomised.sum()))]
    return (masked[0], labels[0]) if single else (masked, labels)


class PretrainingBatches:
    """The training loop's batch source for masked-LM (+ the shards' sentence task) over a shard set.

    Stateless and random-access (the ``BatchSource`` protocol): epoch ``e`` visits ``indices`` in the permutation
    drawn from ``(seed, e)``; rank ``r`` of ``world_size`` takes every ``world_size``-th instance of it (disjoint
    across ranks, equal counts so DDP ranks step together); batch ``i`` is masked with ``default_rng([seed, e, i, r])``.
    Any batch can so be rebuilt exactly on resume, and each epoch gets a fresh (dynamic) masking of the same
    instances.

    Args:
        shards: a :class:`ShardSet` or its folder.
        batch_size: instances per batch on this rank.
        max_predictions: cap on masked positions per row; default ``ceil(mlm_prob * max_seq_len)`` of the set.
        drop_last: drop this rank's final partial batch.
        indices: the instances to draw from (default all); :meth:`split_holdout` uses it.
        token_types: yield ``token_type_ids``; False for models without token types (DistilBERT).
        sentence_labels: yield ``nsp_labels`` (the NSP or SOP labels); default: when the shards' objective has
            them. False drops them, e.g. to distil on NSP shards.
    """

    def __init__(
        self,
        shards: ShardSet | str,
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        mlm_prob: float = 0.15,
        whole_word: bool = False,
        max_predictions: int | None = None,
        drop_last: bool = True,
        indices: np.ndarray | None = None,
        token_types: bool = True,
        sentence_labels: bool | None = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.shards = shards if isinstance(shards, ShardSet) else ShardSet(shards)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.mlm_prob, self.whole_word, self.drop_last = mlm_prob, whole_word, drop_last
        max_seq_len = self.shards.max_seq_len
        self.max_predictions = max_predictions or int(np.ceil(mlm_prob * max_seq_len))
        self.indices = np.arange(len(self.shards)) if indices is None else np.asarray(indices, dtype=np.int64)
        labelled = self.shards.objective != "none"
        if sentence_labels and not labelled:
            raise ValueError(f"{self.shards.shard_dir}: shards were prepared without a sentence task "
                             "(objective 'none'); they hold no sentence labels")
        self.token_types = token_types
        self.sentence_labels = labelled if sentence_labels is None else sentence_labels
        self._epoch_order: tuple[int, np.ndarray] | None = None

    @property
    def sentence_task(self) -> str | None:
        """The sentence task the batches' ``nsp_labels`` carry ("nsp" or "sop"), or None without labels."""
        return self.shards.objective if self.sentence_labels else None

    def split_holdout(self, n: int) -> tuple[PretrainingBatches, PretrainingBatches]:
        """(train, eval) sources: eval holds the last ``n`` instances, i.e. the end of the corpus.

        Taking the tail rather than a random sample keeps evaluation text out of training, since neighbouring
        instances (and duplicates when ``dupe_factor`` > 1) come from the same documents.
        """
        if not 0 < n < len(self.indices):
            raise ValueError(f"holdout size {n} must be in (0, {len(self.indices)})")
        train, held = self.indices[:-n], self.indices[-n:]
        return self._with_indices(train), self._with_indices(held)

    def _with_indices(self, indices: np.ndarray) -> PretrainingBatches:
        return PretrainingBatches(
            self.shards, self.batch_size, self.seed, rank=self.rank, world_size=self.world_size,
            mlm_prob=self.mlm_prob, whole_word=self.whole_word, max_predictions=self.max_predictions,
            drop_last=self.drop_last, indices=indices, token_types=self.token_types,
            sentence_labels=self.sentence_labels,
        )  # fmt: skip

    def _rank_order(self, epoch: int) -> np.ndarray:
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            order = self.indices[np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))]
            usable = len(order) - len(order) % self.world_size
            self._epoch_order = (epoch, order[:usable][self.rank :: self.world_size])
        return self._epoch_order[1]

    def num_batches(self, epoch: int) -> int:
        per_rank = len(self.indices) // self.world_size
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def batch(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        """Tensors for ``model(**batch)``: input_ids, attention_mask, mlm_labels and (with ``token_types``)
        token_type_ids, (B, T) padded to the longest row; with sentence labels, nsp_labels (B,)."""
        if not 0 <= index < self.num_batches(epoch):
            raise IndexError(f"batch {index} out of range: epoch has {self.num_batches(epoch)} batches")
        rows = [self.shards[int(i)] for i in self._rank_order(epoch)[index * self.batch_size :][: self.batch_size]]
        width = max(len(r.ids) for r in rows)
        ids = np.full((len(rows), width), self.shards.pad_id, dtype=np.int64)
        type_ids = np.zeros_like(ids)
        attention = np.zeros_like(ids)
        starts = np.ones(ids.shape, dtype=bool)
        for b, row in enumerate(rows):
            length = len(row.ids)
            ids[b, :length], starts[b, :length], attention[b, :length] = row.ids, row.word_starts, 1
            type_ids[b, row.a_len : length] = 1
        special = np.isin(ids, self.shards.special_ids) | (attention == 0)
        rng = np.random.default_rng([self.seed, epoch, index, self.rank])
        masked, labels = mask_tokens(
            ids, special, rng, self.shards.vocab_size, self.shards.mask_id, self.mlm_prob,
            self.max_predictions, self.whole_word, starts, self.shards.special_ids,
        )  # fmt: skip
        batch = {"input_ids": torch.from_numpy(masked)}
        if self.token_types:
            batch["token_type_ids"] = torch.from_numpy(type_ids)
        batch.update(attention_mask=torch.from_numpy(attention), mlm_labels=torch.from_numpy(labels))
        if self.sentence_labels:
            batch["nsp_labels"] = torch.tensor([r.nsp_label for r in rows], dtype=torch.int64)
        return batch
