"""Sentence embeddings from a loaded encoder and its tokenizer: pooled hidden states, batched by length."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing

import numpy as np
import torch
from tqdm import tqdm

from bertkit.data.batching import length_sorted_batches
from bertkit.infer.batching import run_padded
from bertkit.infer.parallel_batches import streams_for
from bertkit.model import BertModel
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

    ``streams`` batches run at once, each on a share of the CPU threads (:mod:`bertkit.infer.parallel_batches`);
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
