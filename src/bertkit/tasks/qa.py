"""Extractive QA (SQuAD v1.1 / v2.0): question + passage windows in, answer text with character offsets out.

Encoding: question and passage window as a pair in the tokenizer's own layout (BERT and ALBERT
`[CLS] q [SEP] p [SEP]`, RoBERTa `<s> q </s></s> p </s>`), read from an encoded pair rather than assumed. A passage
longer than the window is cut into overlapping windows that start `doc_stride` tokens apart, so every answer lies
whole inside at least one of them. A window that does not contain the answer (or an unanswerable question) points
both targets at the first token ([CLS] / <s>), whose index the feature records.

Decoding: per question, the best span over all its windows among the n-best start and end logits, limited to
passage tokens and `max_answer_len` tokens; the text is cut from the original passage through the tokens'
character offsets, so case, accents and spacing are those of the passage. For SQuAD 2.0 the question gets no
answer when the [CLS] / <s> ("null") score beats the best span score by more than `null_score_diff_threshold`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bertkit.tasks.readers import QAExample

if TYPE_CHECKING:
    from bertkit.tokenizer import Encoding, Tokenizer


@dataclass(frozen=True)
class QAFeature:
    """One window of one question. offsets[i] is token i's (start, end) character span in the passage, or
    None for question and special tokens (they can never be part of an answer)."""

    input_ids: list[int]
    token_type_ids: list[int]
    example_index: int
    offsets: list[tuple[int, int] | None]
    start_position: int = 0
    end_position: int = 0
    cls_index: int = 0  # the [CLS] / <s> token: the "no answer" target and null score

    @property
    def attention_mask(self) -> list[int]:
        return [1] * len(self.input_ids)

    @property
    def targets(self) -> dict[str, int]:
        return {"start_positions": self.start_position, "end_positions": self.end_position}


@dataclass(frozen=True)
class QAPrediction:
    """The decoded answer of one question; text "" (and offsets -1) means no answer."""

    text: str
    start_char: int
    end_char: int
    score: float  # start + end logit of the best span (-inf when no span was allowed)
    null_score: float  # start + end logit at [CLS] / <s>, lowest over the question's windows


@dataclass(frozen=True)
class QAPredictions:
    """answers: question id -> answer text (what the SQuAD metric takes); details: the same with scores."""

    answers: dict[str, str]
    details: dict[str, QAPrediction]


def window_starts(num_tokens: int, window: int, doc_stride: int) -> list[int]:
    """First passage token of each window: 0, stride, 2*stride, ... until a window reaches the end."""
    if window <= 0 or doc_stride <= 0:
        raise ValueError(f"window ({window}) and doc_stride ({doc_stride}) must be positive")
    starts = [0]
    while starts[-1] + window < num_tokens:
        starts.append(starts[-1] + min(doc_stride, window))
    return starts


def answer_token_span(offsets: Sequence[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last passage tokens overlapping the characters [start_char, end_char), or None."""
    first = next((i for i, (_, end) in enumerate(offsets) if end > start_char), None)
    last = next((i for i in reversed(range(len(offsets))) if offsets[i][0] < end_char), None)
    if first is None or last is None or last < first:
        return None
    return first, last


@dataclass(frozen=True)
class PairFrame:
    """The special tokens a tokenizer puts around a pair, read from one encoded pair: the ids and type ids before
    the question, between question and passage, and after the passage, and the type ids of the two texts."""

    before: tuple[tuple[int, int], ...]  # (id, type id) of each special token
    between: tuple[tuple[int, int], ...]
    after: tuple[tuple[int, int], ...]
    question_type: int
    passage_type: int
    cls_index: int  # position of [CLS] / <s>

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> PairFrame:
        enc = tokenizer.encode("a", "b")
        seqs = enc.sequence_ids
        first = [i for i, s in enumerate(seqs) if s == 0]
        second = [i for i, s in enumerate(seqs) if s == 1]
        if not first or not second:
            raise ValueError("the tokenizer encodes the pair ('a', 'b') without a token for each text")

        def specials(lo: int, hi: int) -> tuple[tuple[int, int], ...]:
            return tuple((enc.ids[i], enc.type_ids[i]) for i in range(lo, hi) if seqs[i] is None)

        before = specials(0, first[0])
        cls_index = next((i for i, (token, _) in enumerate(before) if token == tokenizer.cls_id), 0)
        return cls(before, specials(first[-1] + 1, second[0]), specials(second[-1] + 1, len(seqs)),
                   enc.type_ids[first[0]], enc.type_ids[second[0]], cls_index)

    @property
    def num_special(self) -> int:
        return len(self.before) + len(self.between) + len(self.after)

    def frame(self, question: list[int], passage: list[int]) -> tuple[list[int], list[int]]:
        """(input ids, type ids) of question + passage tokens laid out as the tokenizer lays out a pair."""
        parts = (self.before, [(t, self.question_type) for t in question], self.between,
                 [(t, self.passage_type) for t in passage], self.after)
        pairs = [pair for part in parts for pair in part]
        return [t for t, _ in pairs], [k for _, k in pairs]


def _windows(
    index: int,
    example: QAExample,
    question: list[int],
    passage: Encoding,
    frame: PairFrame,
    max_seq_len: int,
    doc_stride: int,
) -> list[QAFeature]:
    """All windows of one question, with targets for its first answer."""
    window = max_seq_len - len(question) - frame.num_special
    span = None
    if example.answers and not example.is_impossible:
        answer = example.answers[0]
        span = answer_token_span(passage.offsets, answer.answer_start, answer.answer_start + len(answer.text))
    shift = len(frame.before) + len(question) + len(frame.between)  # position of the passage's first token
    features = []
    for start in window_starts(len(passage.ids), window, doc_stride):
        stop = min(start + window, len(passage.ids))
        ids, types = frame.frame(question, passage.ids[start:stop])
        offsets = [None] * shift + list(passage.offsets[start:stop]) + [None] * len(frame.after)
        inside = span is not None and start <= span[0] and span[1] < stop
        positions = (span[0] + shift - start, span[1] + shift - start) if inside else (frame.cls_index,) * 2
        features.append(QAFeature(ids, types, index, offsets, *positions, cls_index=frame.cls_index))
    return features


def encode_qa(
    examples: Sequence[QAExample],
    tokenizer: Tokenizer,
    *,
    max_seq_len: int = 384,
    doc_stride: int = 128,
    max_query_len: int = 64,
) -> list[QAFeature]:
    """Split every question's passage into windows and set the span targets.

    Returns:
        features in example order; feature.example_index points back into `examples`.
    """
    frame = PairFrame.of(tokenizer)
    if max_seq_len - max_query_len - frame.num_special <= 0:
        raise ValueError(f"max_seq_len {max_seq_len} leaves no room for a passage after {max_query_len} query tokens")
    questions = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)
    unique = list(dict.fromkeys(e.context for e in examples))  # SQuAD asks ~5 questions per passage
    passages = dict(zip(unique, tokenizer.encode_batch(unique, add_special_tokens=False), strict=True))
    features = []
    for index, (example, question) in enumerate(zip(examples, questions, strict=True)):
        query = question.ids[:max_query_len]
        features += _windows(index, example, query, passages[example.context], frame, max_seq_len, doc_stride)
    return features


def _best_span(
    feature: QAFeature, start: np.ndarray, end: np.ndarray, n_best: int, max_answer_len: int
) -> tuple[float, int, int]:
    """(score, start token, end token) of the best allowed span in one window; score -inf if none."""
    length = len(feature.input_ids)
    allowed = np.array([o is not None for o in feature.offsets])
    start = np.where(allowed, start[:length], -np.inf)
    end = np.where(allowed, end[:length], -np.inf)
    starts = np.argsort(-start, kind="stable")[:n_best]
    ends = np.argsort(-end, kind="stable")[:n_best]
    scores = start[starts][:, None] + end[ends][None, :]
    gap = ends[None, :] - starts[:, None]
    scores = np.where((gap >= 0) & (gap < max_answer_len), scores, -np.inf)
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    return float(scores[i, j]), int(starts[i]), int(ends[j])


def decode_qa(
    examples: Sequence[QAExample],
    features: Sequence[QAFeature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    n_best: int = 20,
    max_answer_len: int = 30,
    allow_no_answer: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> QAPredictions:
    """Answer text and character offsets per question from the span logits of its windows.

    Args:
        start_logits, end_logits: per feature an array (T,) with T >= len(input_ids); a padded (N, T) array works.
        allow_no_answer: SQuAD 2.0: predict "" when null score - best span score > null_score_diff_threshold.
    """
    if not len(features) == len(start_logits) == len(end_logits):
        raise ValueError(f"{len(features)} features but {len(start_logits)}/{len(end_logits)} logit rows")
    best: dict[int, tuple[float, int, int, int]] = {}  # example -> (score, feature, start token, end token)
    null: dict[int, float] = {}
    for f, feature in enumerate(features):
        start, end = np.asarray(start_logits[f], dtype=np.float64), np.asarray(end_logits[f], dtype=np.float64)
        score, i, j = _best_span(feature, start, end, n_best, max_answer_len)
        e = feature.example_index
        cls = feature.cls_index
        null[e] = min(null.get(e, np.inf), float(start[cls] + end[cls]))
        if e not in best or score > best[e][0]:
            best[e] = (score, f, i, j)
    details = {}
    for e, (score, f, i, j) in best.items():
        example = examples[e]
        no_answer = score == -np.inf or (allow_no_answer and null[e] - score > null_score_diff_threshold)
        if no_answer:
            details[example.id] = QAPrediction("", -1, -1, score, null[e])
        else:
            start_char, end_char = features[f].offsets[i][0], features[f].offsets[j][1]
            text = example.context[start_char:end_char]
            details[example.id] = QAPrediction(text, start_char, end_char, score, null[e])
    return QAPredictions({qid: p.text for qid, p in details.items()}, details)
