"""Output layers on top of the encoder: pretraining (MLM + NSP / SOP) and the fine-tuning task heads.

Each head is one small layer, as in the paper: fine-tuning adds a single output layer to BERT.
Losses follow the ``-100 = ignore`` convention for labels. The variants' heads are these same modules:
RoBERTa's ``lm_head`` and DistilBERT's ``vocab_*`` layers are the MLM head, ALBERT's SOP classifier is the
sentence head, and the dense layer of RoBERTa's and DistilBERT's sequence classifiers is the pooler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.checkpoint.io import PretrainedMixin
from bertkit.config import IGNORE, BertConfig
from bertkit.model.bert import BertModel
from bertkit.model.layer import ACTIVATIONS, init_weights


@dataclass
class PreTrainingOutput:
    mlm_logits: torch.Tensor  # (B, T, V), or (N, V) at the N labelled positions when mlm_labels is given
    nsp_logits: torch.Tensor | None  # (B, 2): NSP 0 = IsNext, 1 = NotNext; SOP 0 = in order, 1 = swapped
    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None


@dataclass
class TaskOutput:
    logits: torch.Tensor  # (B, num_labels) for sequences, (B, T, num_labels) for tokens
    loss: torch.Tensor | None = None


@dataclass
class SpanOutput:
    start_logits: torch.Tensor  # (B, T)
    end_logits: torch.Tensor  # (B, T)
    loss: torch.Tensor | None = None


class MaskedLMHead(nn.Module):
    """Transform (dense, activation, LayerNorm) then a decoder tied to the token embeddings, plus a bias.

    The transform maps H -> E, the width of the embedding table (ALBERT's E; H for the others).
    RoBERTa's head applies the exact GELU whatever the encoder's activation.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_dim)
        self.act = ACTIVATIONS[config.variant.lm_activation or config.hidden_act]
        self.norm = nn.LayerNorm(config.embedding_dim, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """(..., H) hidden states, (V, E) token embedding table -> (..., V) logits."""
        return F.linear(self.norm(self.act(self.dense(hidden))), embedding, self.bias)


class BertForPreTraining(PretrainedMixin, nn.Module):
    """BERT with both pretraining objectives: masked-LM and next-sentence prediction.

    The sentence head follows ``config.sentence_task``: NSP for BERT, sentence-order prediction for
    ALBERT (same 2-way head over the pooled output, ``nsp_labels`` then carry order labels), none for
    RoBERTa and DistilBERT, whose model is then the MLM head alone (no pooler, ``nsp_logits`` None).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        has_sentence_head = config.sentence_task is not None
        self.bert = BertModel(config, add_pooler=has_sentence_head)
        self.mlm = MaskedLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2) if has_sentence_head else None
        self.nsp_drop = nn.Dropout(config.head_dropout("sentence"))
        for module in (self.mlm, self.nsp):
            if module is not None:
                module.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        nsp_labels: torch.Tensor | None = None,
    ) -> PreTrainingOutput:
        """With ``mlm_labels`` (B, T), the vocabulary projection runs only at the labelled positions.

        That projection is the largest matmul of a small model's step; about 15% of positions need it.
        """
        if nsp_labels is not None and self.nsp is None:
            raise ValueError(f"{self.config.model_type} has no sentence-level objective; pass nsp_labels=None")
        out = self.bert(input_ids, token_type_ids, attention_mask)
        hidden = out.last_hidden_state
        if mlm_labels is not None:
            selected = mlm_labels != IGNORE
            hidden, targets = hidden[selected], mlm_labels[selected]  # (N, H), (N,)
        mlm_logits = self.lm_logits(hidden)
        nsp_logits = self.nsp(self.nsp_drop(out.pooler_output)) if self.nsp is not None else None
        mlm_loss = F.cross_entropy(mlm_logits.float(), targets) if mlm_labels is not None else None
        nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_labels) if nsp_labels is not None else None
        losses = [x for x in (mlm_loss, nsp_loss) if x is not None]
        return PreTrainingOutput(mlm_logits, nsp_logits, sum(losses) if losses else None, mlm_loss, nsp_loss)


    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) hidden states -> (..., V) vocabulary logits through the MLM head, tied to the token embeddings.

        Pass only the positions that need a prediction (the masked ones): the vocabulary projection is the largest
        matmul of the model.
        """
        return self.mlm(hidden, self.bert.embeddings.token.weight)


def _num_labels(config: BertConfig, num_labels: int | None) -> int:
    if num_labels is not None:
        return num_labels
    id2label = config.extra.get("id2label")
    if not id2label:
        raise ValueError("num_labels not given and config.json has no 'id2label'")
    return len(id2label)


class _LinearTaskModel(PretrainedMixin, nn.Module):
    """Encoder + dropout + one linear layer: the shape of both classification heads of the paper.

    Sequence heads read the pooled first token, so they always have a pooler (DistilBERT's
    ``pre_classifier``, RoBERTa's ``classifier.dense``); the dropout rate is the variant's own key.
    """

    per_token = False

    def __init__(self, config: BertConfig, num_labels: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.num_labels = _num_labels(config, num_labels)
        self.bert = BertModel(config, add_pooler=not self.per_token)
        self.drop = nn.Dropout(config.head_dropout("token" if self.per_token else "sequence"))
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        init_weights(self.classifier, config.initializer_range)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> TaskOutput:
        out = self.bert(input_ids, token_type_ids, attention_mask)
        features = out.last_hidden_state if self.per_token else out.pooler_output  # (B, T, H) or (B, H)
        logits = self.classifier(self.drop(features))
        return TaskOutput(logits, self.loss(logits, labels) if labels is not None else None)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BertForSequenceClassification(_LinearTaskModel):
    """[CLS] pooled representation -> dropout -> linear. One output means regression (MSE)."""

    pooled_classifier = True

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels)


class BertForTokenClassification(_LinearTaskModel):
    """A label per token from its final hidden state; the loss skips positions labelled -100."""

    per_token = True

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)


class BertForQuestionAnswering(PretrainedMixin, nn.Module):
    """Start and end logits over tokens: the answer is the best-scoring span in the passage."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooler=False)
        self.drop = nn.Dropout(config.head_dropout("span"))  # DistilBERT's qa_dropout; none for the others
        self.qa = nn.Linear(config.hidden_size, 2)
        init_weights(self.qa, config.initializer_range)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
    ) -> SpanOutput:
        hidden = self.bert(input_ids, token_type_ids, attention_mask).last_hidden_state
        start, end = self.qa(self.drop(hidden)).float().unbind(-1)  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = (_span_loss(start, start_positions, attention_mask)
                    + _span_loss(end, end_positions, attention_mask)) / 2
        return SpanOutput(start, end, loss)


def _span_loss(logits: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy over the real tokens only: an answer never starts or ends in padding.

    Left in, padded positions would take probability mass that training must push out, and the loss would
    depend on how much padding a batch has (the original code and transformers keep them; measured on SQuAD
    with dropout off, masking them makes bertkit and transformers train identically when both mask).
    """
    if attention_mask is not None:
        logits = logits.masked_fill(attention_mask == 0, torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits, positions)
