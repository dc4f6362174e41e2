"""The input representation of the BERT paper (section 3, figure 2): token + segment + position."""

from __future__ import annotations

import torch
from torch import nn

from bertkit.config import BertConfig


class Embeddings(nn.Module):
    """Sum of three learned embeddings, then LayerNorm and dropout.

    The segment table says which sentence of a pair a token belongs to; BERT learns positions rather
    than using sinusoids, so sequences are capped at ``max_position_embeddings``.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.segment = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, H)."""
        seq_len = input_ids.shape[1]
        if seq_len > self.position.num_embeddings:
            raise ValueError(
                f"input has {seq_len} tokens but the model accepts at most {self.position.num_embeddings} "
                "(max_position_embeddings); truncate the input"
            )
        x = self.token(input_ids) + self.position.weight[:seq_len]  # (B, T, H) + (T, H)
        if token_type_ids is None:
            x = x + self.segment.weight[0]
        else:
            x = x + self.segment(token_type_ids)
        return self.drop(self.norm(x))
