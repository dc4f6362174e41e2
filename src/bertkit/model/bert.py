"""BertModel: embeddings, a stack of encoder layers, and the tanh pooler over [CLS]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bertkit.checkpoint.io import PretrainedMixin
from bertkit.config import BertConfig
from bertkit.model.embeddings import Embeddings
from bertkit.model.layer import EncoderLayer, init_weights


@dataclass
class BertOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    pooler_output: torch.Tensor | None  # (B, H)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # (L + 1) x (B, T, H): embeddings, then each layer
    attentions: tuple[torch.Tensor, ...] | None = None  # L x (B, nh, T, T)


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) 1/0 mask -> bool (B, 1, 1, T) for SDPA, built once per forward and shared by every layer.

    Returns None when nothing is padded, which lets SDPA take its unmasked (fastest) kernel.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


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
        """input_ids, token_type_ids, attention_mask: (B, T). Padded positions are masked as keys."""
        mask = padding_mask(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            x, weights = layer(x, mask, need_weights=output_attentions)
            if hidden is not None:
                hidden.append(x)
            if attentions is not None:
                attentions.append(weights)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        return BertOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
