"""bertkit: a complete, readable BERT system."""

from bertkit.config import BertConfig
from bertkit.model import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from bertkit.tokenizer import Encoding, Tokenizer

__all__ = [
    "BertConfig",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "Encoding",
    "Tokenizer",
]
__version__ = "0.1.0"
