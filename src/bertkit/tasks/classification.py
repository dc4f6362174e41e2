"""Sequence classification and regression features: a text (or pair) in the tokenizer's layout, one label each.

The tokenizer frames the texts as its architecture does (`[CLS] a [SEP] b [SEP]`, RoBERTa `<s> a </s></s> b </s>`);
the head reads the first token.

Label names become ids through a label list: the standard list for GLUE tasks (so ids mean the same thing as in
published checkpoints), otherwise the sorted labels of the training set. Regression (STS-B) has no label list and
keeps float targets; the head then has a single output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bertkit.tasks.readers import TextExample, glue_task

if TYPE_CHECKING:
    from bertkit.tokenizer import Tokenizer


@dataclass(frozen=True)
class ClassificationFeature:
    """Token ids of one example and its target: a class id, a float (regression) or None (unlabelled)."""

    input_ids: list[int]
    token_type_ids: list[int]
    label: int | float | None = None

    @property
    def attention_mask(self) -> list[int]:
        return [1] * len(self.input_ids)

    @property
    def targets(self) -> dict[str, int | float]:
        """The model's keyword arguments for the loss; empty for unlabelled examples."""
        return {} if self.label is None else {"labels": self.label}


def build_label_list(train_examples: Sequence[TextExample], task: str | None = None) -> list[str] | None:
    """Label names in id order: a GLUE task's standard list, else the sorted training labels.

    Returns None for regression (STS-B, or float labels), where the model predicts one number.
    """
    if task is not None:
        labels = glue_task(task).labels
        return None if labels is None else list(labels)
    if any(isinstance(e.label, float) for e in train_examples):
        return None
    names = {e.label for e in train_examples if e.label is not None}
    if not names:
        raise ValueError("no labelled training examples to build a label list from")
    return sorted(names)


def _label_id(example: TextExample, label_list: Sequence[str] | None) -> int | float | None:
    if example.label is None:
        return None
    if label_list is None:
        return float(example.label)
    if example.label not in label_list:
        raise ValueError(f"line {example.line}: label {example.label!r} is not in the label list {list(label_list)}")
    return label_list.index(example.label)


def encode_classification(
    examples: Sequence[TextExample],
    tokenizer: Tokenizer,
    label_list: Sequence[str] | None,
    *,
    max_seq_len: int = 128,
) -> list[ClassificationFeature]:
    """Tokenize examples (pairs truncated longest-first to `max_seq_len`) and map labels to ids.

    Args:
        label_list: names in id order (from `build_label_list`); None for regression.
    Returns:
        one ClassificationFeature per example, in order.
    """
    has_pair = [e.pair is not None for e in examples]
    if any(has_pair) and not all(has_pair):
        raise ValueError("some examples have a pair text and others do not")
    texts = [e.text for e in examples]
    pairs = [e.pair for e in examples] if any(has_pair) else None
    encodings = tokenizer.encode_batch(texts, pairs, max_length=max_seq_len, truncation="longest_first")
    return [
        ClassificationFeature(enc.ids, enc.type_ids, _label_id(example, label_list))
        for example, enc in zip(examples, encodings, strict=True)
    ]


@dataclass
class Classification:
    """label: the predicted class (None for regression); score: its probability, or the regression value."""

    label: str | None
    score: float
    probabilities: dict[str, float]  # every class's probability; empty for regression
    truncated: bool = False


def classify_logits(logits: np.ndarray, label_list: Sequence[str] | None) -> Classification:
    """The prediction of one example from its (num_labels,) logits: the most probable class with every class's
    probability (softmax in float64), or for regression (``label_list`` None) the single output itself."""
    if label_list is None:
        return Classification(None, float(logits[0]), {})
    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max())
    probs = (probs / probs.sum()).tolist()
    best = int(np.argmax(probs))
    return Classification(label_list[best], probs[best], dict(zip(label_list, probs, strict=True)))
