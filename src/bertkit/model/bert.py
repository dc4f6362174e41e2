"""BertModel: embeddings, a stack of encoder layers, and the tanh pooler over [CLS] (for every variant)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bertkit.checkpoint.io import PretrainedMixin
from bertkit.config import BertConfig
from bertkit.model.embeddings import Embeddings
from bertkit.model.layer import EncoderLayer, init_weights
from bertkit.model.unpadding import Packing

POOLER_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None  # (B, H)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # (L + 1) x (B, T, H): embeddings, then each layer run
    attentions: tuple[torch.Tensor, ...] | None = None  # L x (B, nh, T, T), one per layer run


class BertModel(PretrainedMixin, nn.Module):
    """The bidirectional Transformer encoder of the BERT paper, and of its variants.

    ``layers`` holds ``config.num_distinct_layers`` layers, run in the order of ``config.layer_schedule``
    (each once; ALBERT reuses its shared groups). ``add_pooler`` defaults to ``config.has_pooler``; the
    pooler is dense + tanh over the first token, or dense + ReLU for DistilBERT, whose only "pooler" is
    the ``pre_classifier`` of its sequence classifier. RoBERTa's classification head drops out the
    first token before that dense layer, so it does here too.
    """

    def __init__(self, config: BertConfig, add_pooler: bool | None = None) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_distinct_layers))
        self.schedule = config.layer_schedule
        add_pooler = config.has_pooler if add_pooler is None else add_pooler
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooler else None
        self.pooler_act = POOLER_ACTIVATIONS[config.variant.pooler_activation]
        self.pooler_drop = nn.Dropout(config.head_dropout("sequence")) if config.variant.pooler_dropout else None
        self.apply(lambda m: init_weights(m, config.initializer_range))
        if config.extra.get("sinusoidal_pos_embds"):
            self.embeddings.use_sinusoids()

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        """input_ids, token_type_ids, attention_mask: (B, T).

        With padding, the layers run on the real tokens only (see :mod:`bertkit.model.unpadding`) and the
        returned hidden states are zero at padded positions.
        """
        packing = Packing.from_attention_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        if packing is not None:
            x = packing.pack(x)  # (N, H)
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for index in self.schedule:
            x, weights = self.layers[index](x, packing, need_weights=output_attentions)
            if hidden is not None:
                hidden.append(x)
            if attentions is not None:
                attentions.append(weights)
        if packing is not None:
            x = packing.unpack(x)
            hidden = [packing.unpack(h) for h in hidden] if hidden is not None else None
        pooled = None
        if self.pooler is not None:
            first = x[:, 0] if self.pooler_drop is None else self.pooler_drop(x[:, 0])  # (B, H)
            pooled = self.pooler_act(self.pooler(first))
        return BertOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
