"""Evaluation metrics for the BERT fine-tuning tasks.

All scores are fractions in [0, 1] (multiply by 100 for the tables in papers), computed with numpy only:
accuracy, F1, Matthews correlation (CoLA), Pearson / Spearman (STS-B), SQuAD exact match and F1 (official
answer normalisation, SQuAD 2.0 no-answer rule) and entity-level precision / recall / F1 counted as conlleval
counts them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------------------------------
# Classification and regression
# ----------------------------------------------------------------------------------------------------


def _check_pair(preds: Sequence, labels: Sequence) -> None:
    if len(preds) != len(labels):
        raise ValueError(f"predictions and labels differ in length: {len(preds)} != {len(labels)}")
    if len(preds) == 0:
        raise ValueError("cannot score an empty set of predictions")


def accuracy(preds: Sequence[Hashable], labels: Sequence[Hashable]) -> float:
    """Fraction of predictions equal to their label."""
    _check_pair(preds, labels)
    return sum(p == y for p, y in zip(preds, labels, strict=True)) / len(labels)


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts; a zero denominator gives 0 (nothing predicted scores 0)."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def f1_binary(preds: Sequence[Hashable], labels: Sequence[Hashable], positive: Hashable = 1) -> float:
    """F1 of the `positive` class (MRPC and QQP report this next to accuracy)."""
    _check_pair(preds, labels)
    tp = sum(p == positive and y == positive for p, y in zip(preds, labels, strict=True))
    n_pred = sum(p == positive for p in preds)
    n_true = sum(y == positive for y in labels)
    return _prf(tp, n_pred, n_true)[2]


def f1_macro(preds: Sequence[Hashable], labels: Sequence[Hashable]) -> float:
    """Unweighted mean of the per-class F1 over every class seen in labels or predictions."""
    _check_pair(preds, labels)
    classes = set(labels) | set(preds)
    return float(np.mean([f1_binary(preds, labels, positive=c) for c in classes]))


def confusion_matrix(preds: Sequence[int], labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    _check_pair(preds, labels)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(preds)), 1)
    return matrix


def matthews_corrcoef(preds: Sequence[Hashable], labels: Sequence[Hashable]) -> float:
    """Matthews correlation (multi-class form), the CoLA metric; 0 when undefined (a constant side)."""
    _check_pair(preds, labels)
    index = {c: i for i, c in enumerate(sorted(set(labels) | set(preds), key=str))}
    cm = confusion_matrix([index[p] for p in preds], [index[y] for y in labels], len(index)).astype(float)
    n = cm.sum()
    correct = np.trace(cm)
    true_counts, pred_counts = cm.sum(axis=1), cm.sum(axis=0)
    cov_tp = correct * n - true_counts @ pred_counts
    denom = np.sqrt((n * n - pred_counts @ pred_counts) * (n * n - true_counts @ true_counts))
    return float(cov_tp / denom) if denom else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; 0 when either side is constant (no linear relation can be measured)."""
    _check_pair(x, y)
    a = np.asarray(x, dtype=np.float64) - np.mean(x)
    b = np.asarray(y, dtype=np.float64) - np.mean(y)
    denom = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denom) if denom else 0.0


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span: [10, 20, 20] -> [1, 2.5, 2.5]."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v), dtype=np.float64)
    start = 0
    while start < len(v):
        stop = start
        while stop + 1 < len(v) and v[order[stop + 1]] == v[order[start]]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson of the average ranks (ties handled as scipy does)."""
    _check_pair(x, y)
    return pearson(average_ranks(x), average_ranks(y))


# ----------------------------------------------------------------------------------------------------
# SQuAD
# ----------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _token_f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:  # a no-answer on either side scores 1 only if both are empty
        return float(pred_tokens == gold_tokens)
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    return _prf(overlap, len(pred_tokens), len(gold_tokens))[2]


def _golds(answers: Sequence[str]) -> list[str]:
    """Gold texts that survive normalisation; none left means the question has no answer (gold is "")."""
    return [a for a in answers if normalize_answer(a)] or [""]


def squad_exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer ("" golds: only "" matches)."""
    return max(_exact(prediction, g) for g in _golds(answers))


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    """Best bag-of-tokens F1 of the prediction against the gold answers."""
    return max(_token_f1(prediction, g) for g in _golds(answers))


def squad_scores(predictions: Mapping[str, str], gold: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Dataset-level SQuAD scores.

    Args:
        predictions: question id -> predicted text ("" = no answer). A missing id scores 0.
        gold: question id -> gold answer texts (empty for SQuAD 2.0 unanswerable questions).
    Returns:
        exact, f1, total, and the HasAns_* / NoAns_* breakdown (exact, f1, total) for the groups present,
        plus `missing`, the number of gold ids without a prediction.
    """
    groups: dict[str, list[tuple[float, float]]] = {"HasAns": [], "NoAns": []}
    missing = 0
    for qid, answers in gold.items():
        has_answer = bool(answers)  # grouped as the official script does; scoring uses _golds
        if qid in predictions:
            scores = (squad_exact_match(predictions[qid], answers), squad_f1(predictions[qid], answers))
        else:
            missing, scores = missing + 1, (0.0, 0.0)
        groups["HasAns" if has_answer else "NoAns"].append(scores)
    result = _mean_scores("", groups["HasAns"] + groups["NoAns"])
    for name, scores in groups.items():
        if scores:
            result.update(_mean_scores(f"{name}_", scores))
    result["missing"] = float(missing)
    return result


def _mean_scores(prefix: str, scores: list[tuple[float, float]]) -> dict[str, float]:
    if not scores:
        raise ValueError("cannot score an empty set of questions")
    em, f1 = np.mean(scores, axis=0)
    return {f"{prefix}exact": float(em), f"{prefix}f1": float(f1), f"{prefix}total": float(len(scores))}


# ----------------------------------------------------------------------------------------------------
# Entity level (CoNLL)
# ----------------------------------------------------------------------------------------------------


def _split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if tag == "O":
        return "O", ""
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I") or not kind:
        raise ValueError(f"tag {tag!r} is neither 'O' nor B-/I- followed by a type")
    return prefix, kind


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Chunks of a BIO/IOB2 or IOB1 tag sequence as (type, first, last) word indices, inclusive.

    A chunk starts at B-X, or at I-X that follows O or another type (so IOB1 and loose IOB2 read the same
    way conlleval reads them); it continues while I-X of the same type follows.
    """
    entities: list[tuple[str, int, int]] = []
    current: list | None = None
    for i, tag in enumerate(tags):
        prefix, kind = _split_tag(tag)
        if current is not None and prefix == "I" and kind == current[0]:
            current[2] = i
            continue
        if current is not None:
            entities.append(tuple(current))
        current = [kind, i, i] if prefix != "O" else None
    if current is not None:
        entities.append(tuple(current))
    return entities


@dataclass(frozen=True)
class PRF:
    """Precision, recall, F1 and the number of gold entities (support)."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class EntityScores:
    """Overall (micro-averaged over all entities) and per-type scores."""

    overall: PRF
    per_type: dict[str, PRF]


def entity_scores(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> EntityScores:
    """Entity-level precision / recall / F1 as conlleval computes them: an entity counts as correct only when
    its type, first and last word all match. Each inner sequence is one sentence."""
    if len(gold_tags) != len(pred_tags):
        raise ValueError(f"gold and predicted sentence counts differ: {len(gold_tags)} != {len(pred_tags)}")
    gold: set[tuple[int, str, int, int]] = set()
    pred: set[tuple[int, str, int, int]] = set()
    for n, (g, p) in enumerate(zip(gold_tags, pred_tags, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {n}: {len(g)} gold tags but {len(p)} predicted tags")
        gold.update((n, *e) for e in get_entities(g))
        pred.update((n, *e) for e in get_entities(p))
    correct = gold & pred
    per_type = {}
    for kind in sorted({e[1] for e in gold | pred}):
        n_true = sum(e[1] == kind for e in gold)
        counts = (sum(e[1] == kind for e in correct), sum(e[1] == kind for e in pred), n_true)
        per_type[kind] = PRF(*_prf(*counts), support=n_true)
    overall = PRF(*_prf(len(correct), len(pred), len(gold)), support=len(gold))
    return EntityScores(overall=overall, per_type=per_type)
