"""Batches sorted by length, so a batch pads to its own longest text rather than the corpus's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence


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
