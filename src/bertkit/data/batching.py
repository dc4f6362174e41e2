"""Padding and length-sorted batching: the one implementation behind training, evaluation and inference batches.

A batch pads to its own longest row. Sorting rows by length before cutting batches (evaluation, prediction,
inference) keeps that padding small; training batches are drawn at random and padded the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """(B, longest) int64 tensor of the rows, right-padded with ``value`` (filled in numpy: one copy per row)."""
    out = np.full((len(rows), max(len(r) for r in rows)), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out)


def attention_mask(lengths: Sequence[int]) -> torch.Tensor:
    """(B, longest) int64: 1 at the first ``lengths[b]`` positions of row b, 0 at its padding."""
    lengths_t = torch.as_tensor(lengths, dtype=torch.int64)
    return (torch.arange(int(lengths_t.max())) < lengths_t[:, None]).long()


def length_sorted_batches(lengths: Sequence[int], max_batch: int, max_tokens: int | None = None) -> Iterator[list[int]]:
    """Yield lists of indices into ``lengths``, longest first, each holding at most ``max_batch`` items and,
    when ``max_tokens`` is set, at most that many padded tokens (batch size x longest length).

    Longest first means the largest batch is met at once, so an out-of-memory error shows up immediately.
    Rows of equal length keep their input order.
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
