"""Masked-token filling: the top-k tokens the masked-LM head predicts for each [MASK] of a text."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bertkit.model import BertForPreTraining
from bertkit.tokenizer import Tokenizer


@dataclass
class MaskPrediction:
    token: str
    token_id: int
    probability: float


@torch.inference_mode()
def fill_mask(
    model: BertForPreTraining, tokenizer: Tokenizer, text: str, top_k: int = 5
) -> list[list[MaskPrediction]]:
    """Top-k candidates for each [MASK] in ``text``, most probable first (one list per mask)."""
    encoding = tokenizer.encode(text, max_length=model.config.max_sequence_length, truncation=True)
    ids = torch.tensor([encoding.ids])
    positions = (ids[0] == tokenizer.mask_id).nonzero().flatten()
    if len(positions) == 0:
        mask = tokenizer.convert_ids_to_tokens([tokenizer.mask_id])[0]
        raise ValueError(f"no {mask} token in {text!r}; write {mask} where a word should be predicted")
    types = torch.tensor([encoding.type_ids]) if model.config.has_token_types else None
    hidden = model.bert(ids, types).last_hidden_state[0, positions]  # (M, H)
    probs = model.lm_logits(hidden).softmax(-1)  # (M, V)
    top = probs.topk(top_k, dim=-1)
    return [
        [MaskPrediction(tokenizer.convert_ids_to_tokens([i])[0], i, p) for i, p in zip(row_ids, row_p, strict=True)]
        for row_ids, row_p in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    ]
