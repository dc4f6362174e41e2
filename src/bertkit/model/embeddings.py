"""The input representation of the BERT paper (section 3, figure 2): token + segment + position."""

from __future__ import annotations

import torch
from torch import nn

from bertkit.config import BertConfig


class Embeddings(nn.Module):
    """Sum of the learned embeddings, then LayerNorm and dropout.

    The segment table says which sentence of a pair a token belongs to; BERT learns positions rather
    than using sinusoids, so sequences are capped at ``max_position_embeddings``. The variants change
    three things here: DistilBERT has no segment table (``type_vocab_size`` 0), RoBERTa numbers real
    tokens from ``position_offset``, and ALBERT's tables are E wide and projected to the hidden size.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        dim = config.embedding_dim
        self.arch = config.model_type
        self.pad_id = config.pad_token_id
        self.offset = config.position_offset
        self.token = nn.Embedding(config.vocab_size, dim, padding_idx=config.pad_token_id)
        self.segment = nn.Embedding(config.type_vocab_size, dim) if config.has_token_types else None
        # RoBERTa keeps a (never used) position row for padding, at the padding index.
        self.position = nn.Embedding(
            config.max_position_embeddings, dim, padding_idx=config.pad_token_id if self.offset else None
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        # ALBERT's E -> H mapping (present even when E == H, as in its checkpoints).
        self.project = nn.Linear(dim, config.hidden_size) if config.variant.shares_layers else None

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, H)."""
        seq_len = input_ids.shape[1]
        limit = self.position.num_embeddings - self.offset
        if seq_len > limit:
            offset = f" less the position offset {self.offset}" if self.offset else ""
            raise ValueError(
                f"input has {seq_len} tokens but the model accepts at most {limit} "
                f"(max_position_embeddings{offset}); truncate the input"
            )
        x = self.token(input_ids)  # (B, T, E)
        if self.offset:
            x = x + self.position(self.position_ids(input_ids))
        else:
            x = x + self.position.weight[:seq_len]  # (B, T, E) + (T, E)
        if self.segment is None:
            if token_type_ids is not None:
                raise ValueError(
                    f"{self.arch} has no token types (type_vocab_size 0); call the model without token_type_ids"
                )
        elif token_type_ids is None:
            x = x + self.segment.weight[0]
        else:
            x = x + self.segment(token_type_ids)
        x = self.drop(self.norm(x))
        return self.project(x) if self.project is not None else x

    def use_sinusoids(self) -> None:
        """Fixed sin/cos positions (DistilBERT's ``sinusoidal_pos_embds``), frozen so training keeps them."""
        count, dim = self.position.weight.shape
        angle = torch.arange(count, dtype=torch.float64)[:, None] / 10000 ** (
            2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim
        )  # (P, E)
        table = torch.where(torch.arange(dim) % 2 == 0, angle.sin(), angle.cos())
        with torch.no_grad():
            self.position.weight.copy_(table)
        self.position.weight.requires_grad_(False)

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T) position of each token in the position table.

        ``0 .. T-1`` without an offset. With one (RoBERTa), real tokens are counted from ``offset`` and
        pad tokens get the pad index: for right-padded input that is simply ``offset + index``, and
        counting non-pad tokens also gives the reference's numbers for left-padded input.
        """
        if not self.offset:
            return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        real = (input_ids != self.pad_id).long()
        return real.cumsum(1) * real + (self.offset - 1)
