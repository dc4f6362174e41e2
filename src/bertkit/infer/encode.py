"""Sentence embeddings and masked-token filling on top of a loaded model and tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from bertkit.data.batching import length_sorted_batches
from bertkit.infer.batching import run_padded
from bertkit.infer.streams import streams_for
from bertkit.model import BertForPreTraining, BertModel
from bertkit.tokenizer import Tokenizer

POOLINGS = ("cls", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, H) -> (B, H): the [CLS] vector, or the mean over real (non-pad) tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


@torch.inference_mode()
def embed_texts(
    model: BertModel,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int | None = None,
    normalize: bool = False,
    progress: bool = False,
    streams: int | None = None,
) -> np.ndarray:
    """One float32 vector per text, in input order; texts are batched by length to minimise padding.

    ``streams`` batches run at once, each on a share of the CPU threads (:mod:`bertkit.infer.streams`);
    default 2 where there are 2 or more threads.
    """
    max_length = max_length or model.config.max_sequence_length
    encoded = tokenizer.batch_encode(list(texts), max_length=max_length, padding=False, return_tensors=None)
    ids_rows, type_rows = encoded["input_ids"], encoded["token_type_ids"]  # ids only: no offsets or tokens to build
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    groups = list(length_sorted_batches([len(r) for r in ids_rows], batch_size))

    @torch.inference_mode()
    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        types = inputs["token_type_ids"] if model.config.has_token_types else None
        hidden = model(inputs["input_ids"], types, inputs["attention_mask"]).last_hidden_state
        vectors = pool(hidden, inputs["attention_mask"], pooling)
        return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors

    rows = list(zip(ids_rows, type_rows, strict=True))
    with closing(run_padded(rows, groups, tokenizer.pad_id, forward, streams_for(streams))) as results:
        for group, _, vectors in tqdm(results, total=len(groups), disable=not progress, desc="embed", unit="batch"):
            out[group] = vectors.float().numpy()
    return out


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
