"""The BERT encoder and its heads."""

from bertkit.model.bert import BertModel, BertOutput
from bertkit.model.heads import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    PreTrainingOutput,
    SpanOutput,
    TaskOutput,
)

__all__ = [
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "BertOutput",
    "PreTrainingOutput",
    "SpanOutput",
    "TaskOutput",
]
