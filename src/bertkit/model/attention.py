"""Multi-head self-attention with one fused QKV projection over ``scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.config import BertConfig
from bertkit.model.unpadding import Packing


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention (paper section 3; "Attention is all you need" section 3.2).

    One (H -> 3H) matmul replaces three separate projections, and SDPA picks the fastest kernel
    available (flash / memory-efficient on GPU). ``need_weights`` takes the explicit softmax path so
    the attention map can be returned for inspection; the numbers are the same either way.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(
        self, x: torch.Tensor, packing: Packing | None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, H), or (N, H) real tokens only when ``packing`` is given (the batch has padding)."""
        qkv = self.qkv(x)
        mask = None
        if packing is not None:
            qkv, mask = packing.unpack(qkv), packing.mask  # (B, T, 3H), bool (B, 1, 1, T)
        B, T, H3 = qkv.shape
        q, k, v = qkv.view(B, T, 3, self.num_heads, H3 // (3 * self.num_heads)).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        if need_weights:
            y, weights = _explicit_attention(q, k, v, mask, p)
        else:
            y, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        y = y.transpose(1, 2).reshape(B, T, H3 // 3)  # (B, T, H)
        if packing is not None:
            y = packing.pack(y)  # (N, H)
        return self.out_proj(y), weights


def _explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QK^T / sqrt(d)) V, keeping the (B, nh, T, T) weights that SDPA does not expose."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    return F.dropout(weights, dropout_p) @ v, weights
