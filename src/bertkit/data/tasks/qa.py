"""Extractive QA (SQuAD v1.1 / v2.0): question + passage windows in, answer text with character offsets out.

Encoding: [CLS] question [SEP] passage-window [SEP]. A passage longer than the window is cut into overlapping
windows that start `doc_stride` tokens apart, so every answer lies whole inside at least one of them. A window
that does not contain the answer (or an unanswerable question) points both targets at [CLS], index 0.

Decoding: per question, the best span over all its windows among the n-best start and end logits, limited to
passage tokens and `max_answer_len` tokens; the text is cut from the original passage through the tokens'
character offsets, so case, accents and spacing are those of the passage. For SQuAD 2.0 the question gets no
answer when the [CLS] ("null") score beats the best span score by more than `null_score_diff_threshold`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bertkit.data.tasks.readers import QAExample

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
    null_score: float  # start + end logit at [CLS], lowest over the question's windows


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


def _windows(
    index: int,
    example: QAExample,
    question: list[int],
    passage: Encoding,
    tokenizer: Tokenizer,
    max_seq_len: int,
    doc_stride: int,
) -> list[QAFeature]:
    """All windows of one question, with targets for its first answer."""
    window = max_seq_len - len(question) - 3
    span = None
    if example.answers and not example.is_impossible:
        answer = example.answers[0]
        span = answer_token_span(passage.offsets, answer.answer_start, answer.answer_start + len(answer.text))
    features = []
    for start in window_starts(len(passage.ids), window, doc_stride):
        stop = min(start + window, len(passage.ids))
        ids = [tokenizer.cls_id, *question, tokenizer.sep_id, *passage.ids[start:stop], tokenizer.sep_id]
        types = [0] * (len(question) + 2) + [1] * (stop - start + 1)
        offsets = [None] * (len(question) + 2) + list(passage.offsets[start:stop]) + [None]
        shift = len(question) + 2 - start
        inside = span is not None and start <= span[0] and span[1] < stop
        positions = (span[0] + shift, span[1] + shift) if inside else (0, 0)
        features.append(QAFeature(ids, types, index, offsets, *positions))
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
    if max_seq_len - max_query_len - 3 <= 0:
        raise ValueError(f"max_seq_len {max_seq_len} leaves no room for a passage after {max_query_len} query tokens")
    questions = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)
    unique = list(dict.fromkeys(e.context for e in examples))  # SQuAD asks ~5 questions per passage
    passages = dict(zip(unique, tokenizer.encode_batch(unique, add_special_tokens=False), strict=True))
    features = []
    for index, (example, question) in enumerate(zip(examples, questions, strict=True)):
        query = question.ids[:max_query_len]
        features += _windows(index, example, query, passages[example.context], tokenizer, max_seq_len, doc_stride)
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
        null[e] = min(null.get(e, np.inf), float(start[0] + end[0]))
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
