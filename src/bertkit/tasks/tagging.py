"""Token tagging (NER) features: one label per word, predicted on the word's first sub-token.

A sentence's words are joined by single spaces and tokenized once; each sub-token is assigned to a word through
its character offset, so words the tokenizer splits further (such as "1996-08-22") still map to one label. The
other sub-tokens get label -100 and are ignored by the loss. Sentences longer than the window are truncated;
their trailing words get no prediction and decode as "O" (count them with `feature.truncated`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bertkit.config import IGNORE
from bertkit.tasks.metrics import get_entities
from bertkit.tasks.readers import TaggingExample

if TYPE_CHECKING:
    from bertkit.tokenizer import Encoding, Tokenizer



@dataclass(frozen=True)
class TaggingFeature:
    """One sentence as token ids.

    first_token[w] is the position of word w's first sub-token, or -1 when the word lost all its tokens
    (truncated away, or text the tokenizer drops). labels is None for unlabelled sentences.
    """

    input_ids: list[int]
    token_type_ids: list[int]
    first_token: list[int]
    labels: list[int] | None = None
    truncated: bool = False

    @property
    def attention_mask(self) -> list[int]:
        return [1] * len(self.input_ids)

    @property
    def targets(self) -> dict[str, list[int]]:
        return {} if self.labels is None else {"labels": self.labels}


@dataclass(frozen=True)
class EntitySpan:
    """An entity found in a sentence: its type, character span [start, end), text and, where the tag
    probabilities are known, their mean over its words."""

    label: str
    start: int
    end: int
    text: str
    score: float | None = None


def build_tag_list(train_examples: Sequence[TaggingExample]) -> list[str]:
    """Tag names in id order: "O" first, then the other training tags sorted."""
    tags = {t for e in train_examples for t in e.tags or ()}
    return ["O", *sorted(tags - {"O"})]


def word_char_starts(words: Sequence[str]) -> list[int]:
    """Character offset of each word in " ".join(words)."""
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    return starts


def _truncate(enc: Encoding, max_seq_len: int) -> tuple[list[int], list[int], list[int | None], bool]:
    """ids, type ids and sequence ids cut to max_seq_len, keeping the closing special tokens ([SEP], </s>)."""
    ids, types, seqs = enc.ids, enc.type_ids, enc.sequence_ids
    if len(ids) <= max_seq_len:
        return ids, types, seqs, False
    tail = next((n for n, s in enumerate(reversed(seqs)) if s is not None), 0)  # special tokens after the text

    def cut(row: list) -> list:
        return row[: max_seq_len - tail] + row[len(row) - tail :]

    return cut(ids), cut(types), cut(seqs), True


def _first_tokens(enc: Encoding, seqs: list[int | None], starts: list[int]) -> list[int]:
    """Position of each word's first sub-token among the kept tokens (-1 if none)."""
    first = [-1] * len(starts)
    for position, sequence in enumerate(seqs):
        if sequence is None:
            continue
        word = bisect.bisect_right(starts, enc.offsets[position][0]) - 1
        if first[word] < 0:
            first[word] = position
    return first


def encode_tagging(
    examples: Sequence[TaggingExample],
    tokenizer: Tokenizer,
    tag_list: Sequence[str],
    *,
    max_seq_len: int = 128,
) -> list[TaggingFeature]:
    """Tokenize sentences and put each word's tag id on its first sub-token (-100 elsewhere).

    Returns:
        one TaggingFeature per example; `truncated` marks sentences cut to `max_seq_len` tokens.
    """
    tag_id = {t: i for i, t in enumerate(tag_list)}
    encodings = tokenizer.encode_batch([" ".join(e.tokens) for e in examples])
    features = []
    for example, enc in zip(examples, encodings, strict=True):
        ids, types, seqs, truncated = _truncate(enc, max_seq_len)
        first = _first_tokens(enc, seqs, word_char_starts(example.tokens))
        labels = None
        if example.tags is not None:
            labels = [IGNORE] * len(ids)
            for position, tag in zip(first, example.tags, strict=True):
                if tag not in tag_id:
                    raise ValueError(f"line {example.line}: tag {tag!r} is not in the tag list {list(tag_list)}")
                if position >= 0:
                    labels[position] = tag_id[tag]
        features.append(TaggingFeature(ids, types, first, labels, truncated))
    return features


def decode_tags(
    features: Sequence[TaggingFeature], logits: Sequence[np.ndarray], tag_list: Sequence[str]
) -> list[list[str]]:
    """Per-word tags from token logits.

    Args:
        logits: per feature an array (T, num_tags) with T >= len(input_ids); a padded (N, T, num_tags) array works.
    Returns:
        one tag per word of each sentence; words without a sub-token get "O".
    """
    if len(features) != len(logits):
        raise ValueError(f"{len(features)} features but {len(logits)} logit rows")
    out = []
    for feature, row in zip(features, logits, strict=True):
        best = np.asarray(row).argmax(axis=-1)
        out.append([tag_list[best[p]] if p >= 0 else "O" for p in feature.first_token])
    return out


def tags_to_spans(words: Sequence[str], tags: Sequence[str], text: str | None = None) -> list[EntitySpan]:
    """Entities of a tagged sentence with character spans.

    Spans index `text` when given (each word is found in it in order, so original spacing survives), else the
    words joined by single spaces.
    """
    if text is None:
        text, starts = " ".join(words), word_char_starts(words)
    else:
        starts, position = [], 0
        for word in words:
            found = text.find(word, position)
            if found < 0:
                raise ValueError(f"word {word!r} not found in the text after character {position}")
            starts.append(found)
            position = found + len(word)
    return entity_spans(text, [(s, s + len(w)) for s, w in zip(starts, words, strict=True)], tags)


def entity_spans(text: str, words: Sequence[tuple[int, int]], tags: Sequence[str],
                 scores: Sequence[float] | None = None) -> list[EntitySpan]:
    """The entities of per-word BIO tags, as character spans of ``text``.

    Args:
        words: each word's character span [start, end) in ``text``, in order.
        scores: each word's tag probability; an entity's score is their mean over its words.
    """
    spans = []
    for label, first, last in get_entities(list(tags)):
        start, end = words[first][0], words[last][1]
        score = float(np.mean(scores[first : last + 1])) if scores is not None else None
        spans.append(EntitySpan(label, start, end, text[start:end], score))
    return spans
