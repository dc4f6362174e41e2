"""BertModel: embeddings, a stack of encoder layers, and the tanh pooler over [CLS]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bertkit.checkpoint.io import PretrainedMixin
from bertkit.config import BertConfig
from bertkit.model.embeddings import Embeddings
from bertkit.model.layer import EncoderLayer, init_weights
from bertkit.model.packing import Packing


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None  # (B, H)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # (L + 1) x (B, T, H): embeddings, then each layer
    attentions: tuple[torch.Tensor, ...] | None = None  # L x (B, nh, T, T)


class BertModel(PretrainedMixin, nn.Module):
    """The bidirectional Transformer encoder of the BERT paper."""

    def __init__(self, config: BertConfig, add_pooler: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooler else None
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        """input_ids, token_type_ids, attention_mask: (B, T).

        With padding, the layers run on the real tokens only (see :mod:`bertkit.model.packing`) and the
        returned hidden states are zero at padded positions.
        """
        packing = Packing.from_attention_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        if packing is not None:
            x = packing.pack(x)  # (N, H)
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            x, weights = layer(x, packing, need_weights=output_attentions)
            if hidden is not None:
                hidden.append(x)
            if attentions is not None:
                attentions.append(weights)
        if packing is not None:
            x = packing.unpack(x)
            hidden = [packing.unpack(h) for h in hidden] if hidden is not None else None
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return BertOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
