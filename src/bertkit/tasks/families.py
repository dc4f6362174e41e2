"""The five fine-tuning task families and what differs between them: data reader, features, metrics, predictions.

    classify  one text -> a class          BertForSequenceClassification   accuracy, F1, MCC
    pair      two texts -> a class         BertForSequenceClassification   accuracy, F1, MCC
    regress   one or two texts -> a number BertForSequenceClassification   Pearson, Spearman, MSE
    tag       words -> a tag per word      BertForTokenClassification      entity precision / recall / F1
    qa        question + passage -> span   BertForQuestionAnswering        SQuAD exact match / F1

The class names are bertkit's, whatever the variant; a saved model's config.json names the reference class of its
variant (RobertaForSequenceClassification, DistilBertForTokenClassification ...), and `head_class` reads either.
A `TaskSpec` says everything a fine-tuned model needs to read, encode and decode data again; it is stored in the
model's config.json under the "bertkit" key. Model outputs reach this module as one numpy array per feature:
(num_labels,) for sequences, (T, num_labels) for tags, (T, 2) start / end logits for QA.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertkit.tasks import classification, metrics, qa, tagging
from bertkit.tasks.readers import (
    QAExample,
    TaggingExample,
    TaskDataError,
    TextExample,
    check_labels,
    glue_task,
    read_conll,
    read_examples,
    read_glue,
    read_qa_jsonl,
    read_squad,
)
from bertkit.variants import class_variant

if TYPE_CHECKING:
    from bertkit.tokenizer import Tokenizer

TASKS = ("classify", "pair", "regress", "tag", "qa")
SEQUENCE_TASKS = ("classify", "pair", "regress")
ARCHITECTURES = {
    "classify": "BertForSequenceClassification",
    "pair": "BertForSequenceClassification",
    "regress": "BertForSequenceClassification",
    "tag": "BertForTokenClassification",
    "qa": "BertForQuestionAnswering",
}
# The figure each family is judged by (the BERT paper's choice for GLUE: F1 for MRPC / QQP, MCC for CoLA).
PRIMARY_METRIC = {"classify": "accuracy", "pair": "accuracy", "regress": "spearman", "tag": "f1", "qa": "f1"}
GLUE_METRIC = {"cola": "mcc", "mrpc": "f1", "qqp": "f1"}
TABLE_SUFFIXES = (".jsonl", ".csv", ".tsv")

Example = TextExample | TaggingExample | QAExample


@dataclass(frozen=True)
class TaskSpec:
    """A task family and its data settings.

    labels: class or tag names in id order; None for regress and qa. Column names apply to CSV / TSV / JSONL
    files; a GLUE task name overrides them with the task's own columns. The QA fields set the passage windows
    and the SQuAD 2.0 no-answer rule.
    """

    task: str
    labels: tuple[str, ...] | None = None
    max_seq_len: int = 128
    glue: str | None = None
    text_column: str = "text"
    pair_column: str | None = None
    label_column: str = "label"
    doc_stride: int = 128
    max_query_len: int = 64
    squad_v2: bool = False
    null_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r} (expected one of {', '.join(TASKS)})")
        if self.task == "pair" and self.glue is None and self.pair_column is None:
            raise ValueError("task 'pair' needs a pair column (--pair-column)")

    @property
    def metric(self) -> str:
        """The dev metric that picks the best checkpoint (greater is better)."""
        return GLUE_METRIC.get(self.glue or "", PRIMARY_METRIC[self.task])

    @property
    def architecture(self) -> str:
        return ARCHITECTURES[self.task]

    def config_entries(self) -> dict[str, Any]:
        """config.json keys: the standard label keys (read by every BERT library) plus ours under "bertkit"."""
        entries: dict[str, Any] = {"bertkit": {k: v for k, v in dataclasses.asdict(self).items() if k != "labels"}}
        names = list(self.labels) if self.labels is not None else (["score"] if self.task == "regress" else None)
        if names is not None:
            entries["id2label"] = {str(i): name for i, name in enumerate(names)}
            entries["label2id"] = {name: i for i, name in enumerate(names)}
        if self.task in SEQUENCE_TASKS:
            entries["problem_type"] = "regression" if self.task == "regress" else "single_label_classification"
        return entries

    @classmethod
    def from_config(cls, extra: dict[str, Any], source: str) -> TaskSpec:
        """Read back what `config_entries` wrote; a checkpoint fine-tuned elsewhere (no "bertkit" key) gets its
        family from "architectures" and default data settings."""
        stored = dict(extra.get("bertkit") or {})
        if not stored:
            stored["task"] = _task_from_architecture(extra, source)
        id2label = extra.get("id2label") or {}
        if stored["task"] in ("classify", "pair", "tag"):
            if not id2label:
                raise ValueError(f"{source}: a {stored['task']!r} model needs 'id2label' in config.json")
            stored["labels"] = tuple(id2label[str(i)] for i in range(len(id2label)))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in known})


def head_class(architecture: str) -> str | None:
    """bertkit's task class for a saved model's architecture name, or None when it is not a task head.

    "RobertaForTokenClassification" -> "BertForTokenClassification"; every variant's name maps to the same class.
    """
    found = class_variant(architecture)
    if found is None:
        return None
    name = "Bert" + found[1]
    return name if name in ARCHITECTURES.values() else None


def _task_from_architecture(extra: dict[str, Any], source: str) -> str:
    architecture = (extra.get("architectures") or [""])[0]
    head = head_class(architecture)
    if head == "BertForSequenceClassification":
        regression = extra.get("problem_type") == "regression" or len(extra.get("id2label") or {}) == 1
        return "regress" if regression else "classify"
    family = {"BertForTokenClassification": "tag", "BertForQuestionAnswering": "qa"}.get(head or "")
    if family is None:
        raise ValueError(f"{source}: not a fine-tuned model (architecture {architecture or 'unknown'!r}, "
                         "no 'bertkit' task key in config.json)")
    return family


def task_for_glue(name: str) -> str:
    """The family of a GLUE task: sst2 / cola -> classify, stsb -> regress, the others -> pair."""
    glue = glue_task(name)
    if glue.labels is None:
        return "regress"
    return "classify" if glue.pair_column is None else "pair"


# ----------------------------------------------------------------------------------------------------------
# Reading and encoding
# ----------------------------------------------------------------------------------------------------------


def read_task_file(spec: TaskSpec, path: str | Path, *, labelled: bool = True) -> list[Example]:
    """Examples of `spec`'s family from a file; unlabelled files are read for prediction.

    classify / pair / regress: a GLUE TSV (spec.glue) or a CSV / TSV / JSONL with the spec's columns.
    tag: a CoNLL column file; for prediction also a CSV / TSV / JSONL whose text column is split on spaces.
    qa: SQuAD JSON (plain or .gz); for prediction also JSONL with "question" and "context".
    """
    path = Path(path)
    if spec.task in SEQUENCE_TASKS:
        if spec.glue is not None:
            return read_glue(spec.glue, path, has_labels=labelled)
        pair = spec.pair_column if spec.task != "classify" else None
        return read_examples(path, text_column=spec.text_column, pair_column=pair,
                             label_column=spec.label_column if labelled else None, regression=spec.task == "regress")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if spec.task == "tag":
        if labelled or not suffix.startswith(TABLE_SUFFIXES):
            return read_conll(path)
        texts = read_examples(path, text_column=spec.text_column, label_column=None)
        return [TaggingExample(tuple(e.text.split()), None, e.line) for e in texts]
    if not labelled and suffix.startswith(".jsonl"):
        return read_qa_jsonl(path)
    examples, _ = read_squad(path, require_answers=labelled)
    if not examples:
        raise TaskDataError(f"{path}: no usable questions")
    return examples


def label_list(spec: TaskSpec, train: Sequence[Example]) -> tuple[str, ...] | None:
    """Class names (the GLUE standard list, else the sorted training labels), tag names, or None."""
    if spec.task in ("regress", "qa"):
        return None
    if spec.task == "tag":
        return tuple(tagging.build_tag_list(train))
    return tuple(classification.build_label_list(train, task=spec.glue))


def check_known_labels(spec: TaskSpec, examples: Sequence[Example], path: str | Path) -> None:
    """Fail on an evaluation label the model was never trained to predict."""
    if spec.labels is not None:
        check_labels(spec.labels, examples, path)


def encode(spec: TaskSpec, examples: Sequence[Example], tokenizer: Tokenizer) -> list:
    """Features (see tasks.batches.TaskFeature) in example order; QA gives one or more per question."""
    if spec.task in SEQUENCE_TASKS:
        return classification.encode_classification(examples, tokenizer, spec.labels, max_seq_len=spec.max_seq_len)
    if spec.task == "tag":
        return tagging.encode_tagging(examples, tokenizer, spec.labels, max_seq_len=spec.max_seq_len)
    return qa.encode_qa(examples, tokenizer, max_seq_len=spec.max_seq_len, doc_stride=spec.doc_stride,
                        max_query_len=spec.max_query_len)


# ----------------------------------------------------------------------------------------------------------
# Scores and predictions
# ----------------------------------------------------------------------------------------------------------


def score(spec: TaskSpec, examples: Sequence[Example], features: Sequence, outputs: Sequence[np.ndarray]) -> dict:
    """The family's metrics (fractions in [0, 1]) over labelled examples."""
    if spec.task in ("classify", "pair"):
        preds = np.stack(outputs).argmax(-1).tolist()
        gold = [f.label for f in features]
        binary = len(spec.labels) == 2
        f1 = metrics.f1_binary(preds, gold, positive=1) if binary else metrics.f1_macro(preds, gold)
        return {"accuracy": metrics.accuracy(preds, gold), "f1": f1, "mcc": metrics.matthews_corrcoef(preds, gold)}
    if spec.task == "regress":
        preds, gold = np.stack(outputs)[:, 0], np.array([f.label for f in features])
        return {"pearson": metrics.pearson(preds, gold), "spearman": metrics.spearman(preds, gold),
                "mse": float(np.mean((preds - gold) ** 2))}
    if spec.task == "tag":
        predicted = tagging.decode_tags(features, outputs, spec.labels)
        found = metrics.entity_scores([list(e.tags) for e in examples], predicted).overall
        return {"precision": found.precision, "recall": found.recall, "f1": found.f1}
    answers = _decode_qa(spec, examples, features, outputs).answers
    gold = {e.id: [a.text for a in e.answers] for e in examples}
    return metrics.squad_scores(answers, gold)


def details(spec: TaskSpec, examples: Sequence[Example], features: Sequence, outputs: Sequence[np.ndarray]) -> dict:
    """What the training report draws beyond the headline metric: a confusion matrix or per-entity scores."""
    if spec.task in ("classify", "pair"):
        preds = np.stack(outputs).argmax(-1).tolist()
        matrix = metrics.confusion_matrix(preds, [f.label for f in features], len(spec.labels))
        return {"labels": list(spec.labels), "confusion_matrix": matrix.tolist()}
    if spec.task == "tag":
        predicted = tagging.decode_tags(features, outputs, spec.labels)
        per_type = metrics.entity_scores([list(e.tags) for e in examples], predicted).per_type
        return {"per_entity": {name: {"precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support}
                               for name, s in per_type.items()}}
    return {}


def prediction_records(
    spec: TaskSpec, examples: Sequence[Example], features: Sequence, outputs: Sequence[np.ndarray]
) -> list[dict[str, Any]]:
    """One JSON-ready record per example.

    classify / pair: label and probabilities per class; regress: score; tag: the words joined by single spaces
    ("text"), a tag per word and entities with character spans into that text; qa: id, answer text, score and
    character offsets [start, end) into the passage (-1 when there is no answer).
    """
    if spec.task in ("classify", "pair"):
        logits = np.stack(outputs).astype(np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return [{"label": spec.labels[int(row.argmax())], "probabilities": dict(zip(spec.labels, row.tolist(),
                                                                                      strict=True))} for row in probs]
    if spec.task == "regress":
        return [{"score": float(o[0])} for o in outputs]
    if spec.task == "tag":
        predicted = tagging.decode_tags(features, outputs, spec.labels)
        return [{"text": " ".join(e.tokens), "tags": tags,
                 "entities": [dataclasses.asdict(s) for s in tagging.tags_to_spans(e.tokens, tags)]}
                for e, tags in zip(examples, predicted, strict=True)]
    details = _decode_qa(spec, examples, features, outputs).details
    return [{"id": e.id, "answer": (d := details[e.id]).text, "score": d.score, "start": d.start_char,
             "end": d.end_char} for e in examples]


def _decode_qa(spec: TaskSpec, examples: Sequence[QAExample], features: Sequence, outputs: Sequence[np.ndarray]):
    return qa.decode_qa(examples, features, [o[:, 0] for o in outputs], [o[:, 1] for o in outputs],
                        allow_no_answer=spec.squad_v2, null_score_diff_threshold=spec.null_threshold)
