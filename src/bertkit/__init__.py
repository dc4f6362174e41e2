"""bertkit: a complete, readable BERT system."""

from bertkit.config import BertConfig
from bertkit.infer.predictor import Predictor
from bertkit.model import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)
from bertkit.tasks.models import TaskModel, load_task_model
from bertkit.tokenizer import Encoding, Tokenizer

__all__ = [
    "BertConfig",
    "BertForPreTraining",
    "BertForQuestionAnswering",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "Encoding",
    "Predictor",
    "TaskModel",
    "Tokenizer",
    "load_task_model",
]
__version__ = "0.1.0"
