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
from typing import TYPE_CHECKING, Any, ClassVar

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

GLUE_METRIC = {"cola": "mcc", "mrpc": "f1", "qqp": "f1"}  # the BERT paper's choice: F1 for MRPC / QQP, MCC for CoLA
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
        if self.task not in FAMILIES:
            raise ValueError(f"unknown task {self.task!r} (expected one of {', '.join(TASKS)})")
        self.family.check(self)

    @property
    def family(self) -> Task:
        """The task family's behaviour: reading, encoding, scoring and decoding its data."""
        return FAMILIES[self.task]

    @property
    def metric(self) -> str:
        """The dev metric that picks the best checkpoint (greater is better)."""
        return GLUE_METRIC.get(self.glue or "", self.family.metric)

    @property
    def architecture(self) -> str:
        return self.family.head

    def config_entries(self) -> dict[str, Any]:
        """config.json keys: the standard label keys (read by every BERT library) plus ours under "bertkit"."""
        entries: dict[str, Any] = {"bertkit": {k: v for k, v in dataclasses.asdict(self).items() if k != "labels"}}
        names = list(self.labels) if self.labels is not None else self.family.output_names
        if names is not None:
            entries["id2label"] = {str(i): name for i, name in enumerate(names)}
            entries["label2id"] = {name: i for i, name in enumerate(names)}
        if self.family.problem_type is not None:
            entries["problem_type"] = self.family.problem_type
        return entries

    @classmethod
    def from_config(cls, extra: dict[str, Any], source: str) -> TaskSpec:
        """Read back what `config_entries` wrote; a checkpoint fine-tuned elsewhere (no "bertkit" key) gets its
        family from "architectures" and default data settings."""
        stored = dict(extra.get("bertkit") or {})
        if not stored:
            stored["task"] = _task_from_architecture(extra, source)
        id2label = extra.get("id2label") or {}
        if stored.get("task") in FAMILIES and FAMILIES[stored["task"]].named_labels:
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
    return name if name in {family.head for family in FAMILIES.values()} else None


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
# The families
# ----------------------------------------------------------------------------------------------------------


class Task:
    """What one task family does with its data: read, encode, score, decode and write predictions.

    Stateless: every method takes the ``TaskSpec`` of the data at hand. A new family is a subclass registered in
    ``FAMILIES``; the fine-tuning recipe, ``bertkit evaluate`` / ``predict`` and the Predictor find it there.
    Model outputs arrive as one numpy array per feature (see the module docstring).
    """

    name: ClassVar[str]
    head: ClassVar[str]  # bertkit's model class for the family
    metric: ClassVar[str]  # the dev metric that picks the best checkpoint, unless the GLUE task names another
    answers: ClassVar[str]  # the Predictor method that serves the family
    named_labels: ClassVar[bool] = True  # the head's outputs are named classes or tags (id2label)
    output_names: ClassVar[list[str] | None] = None  # id2label of a head without named labels
    problem_type: ClassVar[str | None] = None  # config.json's problem_type (sequence heads)
    needs_pairs: ClassVar[bool] = False  # every input is two texts
    default_lr: ClassVar[float] = 3e-5  # the BERT paper's fine-tuning grid is 2e-5 .. 5e-5
    default_max_seq_len: ClassVar[int] = 128

    def check(self, spec: TaskSpec) -> None:
        """Refuse data settings the family cannot use."""

    def read(self, spec: TaskSpec, path: Path, labelled: bool) -> list[Example]:
        raise NotImplementedError

    def label_list(self, spec: TaskSpec, train: Sequence[Example]) -> tuple[str, ...] | None:
        return None

    def encode(self, spec: TaskSpec, examples: Sequence[Example], tokenizer: Tokenizer) -> list:
        raise NotImplementedError

    def score(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
              outputs: Sequence[np.ndarray]) -> dict:
        raise NotImplementedError

    def details(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
                outputs: Sequence[np.ndarray]) -> dict:
        return {}

    def records(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
                outputs: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        raise NotImplementedError


class _SequenceTask(Task):
    """One text or a pair -> the pooled first token -> a class or a number."""

    head = "BertForSequenceClassification"
    answers = "classify"
    problem_type = "single_label_classification"
    takes_pairs = False  # the second text column is read

    def read(self, spec: TaskSpec, path: Path, labelled: bool) -> list[Example]:
        if spec.glue is not None:
            return read_glue(spec.glue, path, has_labels=labelled)
        return read_examples(path, text_column=spec.text_column,
                             pair_column=spec.pair_column if self.takes_pairs else None,
                             label_column=spec.label_column if labelled else None,
                             regression=not self.named_labels)

    def encode(self, spec: TaskSpec, examples: Sequence[Example], tokenizer: Tokenizer) -> list:
        return classification.encode_classification(examples, tokenizer, spec.labels, max_seq_len=spec.max_seq_len)

    def records(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
                outputs: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        return [self.record(classification.classify_logits(o, spec.labels)) for o in outputs]

    def record(self, result: classification.Classification) -> dict[str, Any]:
        return {"label": result.label, "probabilities": result.probabilities}


class ClassifyTask(_SequenceTask):
    name, metric = "classify", "accuracy"

    def label_list(self, spec: TaskSpec, train: Sequence[Example]) -> tuple[str, ...] | None:
        return tuple(classification.build_label_list(train, task=spec.glue))

    def score(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
              outputs: Sequence[np.ndarray]) -> dict:
        preds, gold = np.stack(outputs).argmax(-1).tolist(), [f.label for f in features]
        binary = len(spec.labels) == 2
        f1 = metrics.f1_binary(preds, gold, positive=1) if binary else metrics.f1_macro(preds, gold)
        return {"accuracy": metrics.accuracy(preds, gold), "f1": f1, "mcc": metrics.matthews_corrcoef(preds, gold)}

    def details(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
                outputs: Sequence[np.ndarray]) -> dict:
        preds = np.stack(outputs).argmax(-1).tolist()
        matrix = metrics.confusion_matrix(preds, [f.label for f in features], len(spec.labels))
        return {"labels": list(spec.labels), "confusion_matrix": matrix.tolist()}


class PairTask(ClassifyTask):
    name = "pair"
    takes_pairs = needs_pairs = True

    def check(self, spec: TaskSpec) -> None:
        if spec.glue is None and spec.pair_column is None:
            raise ValueError("task 'pair' needs a pair column (--pair-column)")


class RegressTask(_SequenceTask):
    name, metric = "regress", "spearman"
    named_labels, output_names, problem_type = False, ["score"], "regression"
    takes_pairs = True  # one text or two: the pair column is read when given

    def score(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
              outputs: Sequence[np.ndarray]) -> dict:
        preds, gold = np.stack(outputs)[:, 0], np.array([f.label for f in features])
        return {"pearson": metrics.pearson(preds, gold), "spearman": metrics.spearman(preds, gold),
                "mse": float(np.mean((preds - gold) ** 2))}

    def record(self, result: classification.Classification) -> dict[str, Any]:
        return {"score": result.score}


class TagTask(Task):
    """Words -> a tag per word, read at each word's first sub-token; entities are the BIO spans."""

    name, head, metric, answers = "tag", "BertForTokenClassification", "f1", "tag"

    def read(self, spec: TaskSpec, path: Path, labelled: bool) -> list[Example]:
        if labelled or not _suffix(path).startswith(TABLE_SUFFIXES):
            return read_conll(path)
        texts = read_examples(path, text_column=spec.text_column, label_column=None)
        return [TaggingExample(tuple(e.text.split()), None, e.line) for e in texts]

    def label_list(self, spec: TaskSpec, train: Sequence[Example]) -> tuple[str, ...] | None:
        return tuple(tagging.build_tag_list(train))

    def encode(self, spec: TaskSpec, examples: Sequence[Example], tokenizer: Tokenizer) -> list:
        return tagging.encode_tagging(examples, tokenizer, spec.labels, max_seq_len=spec.max_seq_len)

    def _entity_scores(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
                       outputs: Sequence[np.ndarray]) -> metrics.EntityScores:
        predicted = tagging.decode_tags(features, outputs, spec.labels)
        return metrics.entity_scores([list(e.tags) for e in examples], predicted)

    def score(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
              outputs: Sequence[np.ndarray]) -> dict:
        found = self._entity_scores(spec, examples, features, outputs).overall
        return {"precision": found.precision, "recall": found.recall, "f1": found.f1}

    def details(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
                outputs: Sequence[np.ndarray]) -> dict:
        per_type = self._entity_scores(spec, examples, features, outputs).per_type
        return {"per_entity": {name: {"precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support}
                               for name, s in per_type.items()}}

    def records(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
                outputs: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        predicted = tagging.decode_tags(features, outputs, spec.labels)
        return [{"text": " ".join(e.tokens), "tags": tags,
                 "entities": [{"label": s.label, "start": s.start, "end": s.end, "text": s.text}
                              for s in tagging.tags_to_spans(e.tokens, tags)]}
                for e, tags in zip(examples, predicted, strict=True)]


class QATask(Task):
    """Question + passage -> the best answer span, read over overlapping passage windows."""

    name, head, metric, answers = "qa", "BertForQuestionAnswering", "f1", "answer"
    named_labels = False
    default_lr, default_max_seq_len = 5e-5, 384  # the paper's SQuAD settings

    def read(self, spec: TaskSpec, path: Path, labelled: bool) -> list[Example]:
        if not labelled and _suffix(path).startswith(".jsonl"):
            return read_qa_jsonl(path)
        examples, _ = read_squad(path, require_answers=labelled)
        if not examples:
            raise TaskDataError(f"{path}: no usable questions")
        return examples

    def encode(self, spec: TaskSpec, examples: Sequence[Example], tokenizer: Tokenizer) -> list:
        return qa.encode_qa(examples, tokenizer, max_seq_len=spec.max_seq_len, doc_stride=spec.doc_stride,
                            max_query_len=spec.max_query_len)

    def decode(self, spec: TaskSpec, examples: Sequence[QAExample], features: Sequence,
               outputs: Sequence[np.ndarray]) -> qa.QAPredictions:
        return qa.decode_qa(examples, features, [o[:, 0] for o in outputs], [o[:, 1] for o in outputs],
                            allow_no_answer=spec.squad_v2, null_score_diff_threshold=spec.null_threshold)

    def score(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
              outputs: Sequence[np.ndarray]) -> dict:
        answers = self.decode(spec, examples, features, outputs).answers
        return metrics.squad_scores(answers, {e.id: [a.text for a in e.answers] for e in examples})

    def records(self, spec: TaskSpec, examples: Sequence[Example], features: Sequence,
                outputs: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        details = self.decode(spec, examples, features, outputs).details
        return [{"id": e.id, "answer": (d := details[e.id]).text, "score": d.score, "start": d.start_char,
                 "end": d.end_char} for e in examples]


FAMILIES: dict[str, Task] = {t.name: t for t in (ClassifyTask(), PairTask(), RegressTask(), TagTask(), QATask())}
TASKS = tuple(FAMILIES)


def _suffix(path: Path) -> str:
    return "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix


# ----------------------------------------------------------------------------------------------------------
# One entry per step, for the data of a spec
# ----------------------------------------------------------------------------------------------------------


def read_task_file(spec: TaskSpec, path: str | Path, *, labelled: bool = True) -> list[Example]:
    """Examples of `spec`'s family from a file; unlabelled files are read for prediction.

    classify / pair / regress: a GLUE TSV (spec.glue) or a CSV / TSV / JSONL with the spec's columns.
    tag: a CoNLL column file; for prediction also a CSV / TSV / JSONL whose text column is split on spaces.
    qa: SQuAD JSON (plain or .gz); for prediction also JSONL with "question" and "context".
    """
    return spec.family.read(spec, Path(path), labelled)


def label_list(spec: TaskSpec, train: Sequence[Example]) -> tuple[str, ...] | None:
    """Class names (the GLUE standard list, else the sorted training labels), tag names, or None."""
    return spec.family.label_list(spec, train)


def check_known_labels(spec: TaskSpec, examples: Sequence[Example], path: str | Path) -> None:
    """Fail on an evaluation label the model was never trained to predict."""
    if spec.labels is not None:
        check_labels(spec.labels, examples, path)


def encode(spec: TaskSpec, examples: Sequence[Example], tokenizer: Tokenizer) -> list:
    """Features (see tasks.batches.TaskFeature) in example order; QA gives one or more per question."""
    return spec.family.encode(spec, examples, tokenizer)


def score(spec: TaskSpec, examples: Sequence[Example], features: Sequence, outputs: Sequence[np.ndarray]) -> dict:
    """The family's metrics (fractions in [0, 1]) over labelled examples."""
    return spec.family.score(spec, examples, features, outputs)


def details(spec: TaskSpec, examples: Sequence[Example], features: Sequence, outputs: Sequence[np.ndarray]) -> dict:
    """What the training report draws beyond the headline metric: a confusion matrix or per-entity scores."""
    return spec.family.details(spec, examples, features, outputs)


def prediction_records(
    spec: TaskSpec, examples: Sequence[Example], features: Sequence, outputs: Sequence[np.ndarray]
) -> list[dict[str, Any]]:
    """One JSON-ready record per example.

    classify / pair: label and probabilities per class; regress: score; tag: the words joined by single spaces
    ("text"), a tag per word and entities with character spans into that text; qa: id, answer text, score and
    character offsets [start, end) into the passage (-1 when there is no answer).
    """
    return spec.family.records(spec, examples, features, outputs)
