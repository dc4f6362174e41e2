"""Inference batches: rows padded per group (groups from :func:`bertkit.data.batching.length_sorted_batches`) and
run on the backend, on parallel streams where there are several."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import TypeVar

import torch

from bertkit.data.batching import attention_mask, pad
from bertkit.infer.parallel_batches import Streams, run_batches

Row = tuple[Sequence[int], Sequence[int]]  # token ids, token type ids
R = TypeVar("R")


def pad_rows(rows: Sequence[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (ids, type ids) rows into input_ids, token_type_ids and attention_mask, (B, T) int64 each,
    T = the longest row."""
    return {"input_ids": pad([r[0] for r in rows], pad_id), "token_type_ids": pad([r[1] for r in rows], 0),
            "attention_mask": attention_mask([len(r[0]) for r in rows])}


def run_padded(rows: Sequence[Row], groups: Sequence[list[int]], pad_id: int,
               run: Callable[[dict[str, torch.Tensor]], R], streams: Streams | None,
               ) -> Iterator[tuple[list[int], dict[str, torch.Tensor], R]]:
    """(indices, padded batch, ``run(batch)``) for each group of row indices, in order; the batches run on
    ``streams`` as :func:`bertkit.infer.parallel_batches.run_batches` decides. Closing this early cancels the batches
    not yet started."""
    batches = [pad_rows([rows[i] for i in group], pad_id) for group in groups]
    with closing(run_batches(run, batches, streams)) as outputs:
        yield from zip(groups, batches, outputs, strict=True)
