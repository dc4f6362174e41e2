"""Batches sorted by length, so a batch pads to its own longest text rather than the corpus's."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import TypeVar

import numpy as np
import torch

from bertkit.infer.streams import Streams, run_batches

Row = tuple[Sequence[int], Sequence[int]]  # token ids, token type ids
R = TypeVar("R")


def length_sorted_batches(lengths: Sequence[int], max_batch: int, max_tokens: int | None = None) -> Iterator[list[int]]:
    """Yield lists of indices into ``lengths``, longest first, each holding at most ``max_batch`` items and,
    when ``max_tokens`` is set, at most that many padded tokens (batch size x longest length).

    Longest first means the largest batch is met at once, so an out-of-memory error shows up immediately.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        too_many = len(batch) >= max_batch
        too_big = max_tokens is not None and batch and (len(batch) + 1) * longest > max_tokens
        if too_many or too_big:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def pad_rows(rows: Sequence[Row], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (ids, type ids) rows into input_ids, token_type_ids and attention_mask, (B, T) int64 each,
    T = the longest row."""
    longest = max(len(r[0]) for r in rows)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, (r_ids, r_types) in enumerate(rows):
        n = len(r_ids)
        ids[row, :n], types[row, :n], mask[row, :n] = r_ids, r_types, 1
    return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
            "attention_mask": torch.from_numpy(mask)}


def run_padded(rows: Sequence[Row], groups: Sequence[list[int]], pad_id: int,
               run: Callable[[dict[str, torch.Tensor]], R], streams: Streams | None,
               ) -> Iterator[tuple[list[int], dict[str, torch.Tensor], R]]:
    """(indices, padded batch, ``run(batch)``) for each group of row indices, in order; the batches run on
    ``streams`` as :func:`bertkit.infer.streams.run_batches` decides. Closing this early cancels the batches
    not yet started."""
    batches = [pad_rows([rows[i] for i in group], pad_id) for group in groups]
    with closing(run_batches(run, batches, streams)) as outputs:
        yield from zip(groups, batches, outputs, strict=True)
