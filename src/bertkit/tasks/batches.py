"""Batches of fine-tuning features: a random-access BatchSource for training, length-sorted batches for inference.

Any feature with `input_ids`, `token_type_ids` and a `targets` dict works (ClassificationFeature, TaggingFeature,
QAFeature). Sequences are padded to the longest in the batch; scalar targets become a (B,) tensor (long for ints,
float for regression), list targets (tagging) a (B, T) tensor padded with -100.

A model without token types (DistilBERT, `type_vocab_size` 0) refuses `token_type_ids`;
`BertConfig.has_token_types` is the one rule that decides whether a batch carries them, for the batches built
here and (through `model_inputs`) for any batch built elsewhere, such as a tokenizer's `batch_encode`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from bertkit.config import IGNORE, BertConfig
from bertkit.data.batching import attention_mask, length_sorted_batches, pad


class TaskFeature(Protocol):
    input_ids: list[int]
    token_type_ids: list[int]

    @property
    def targets(self) -> dict[str, int | float | list[int]]: ...


def model_inputs(batch: dict[str, torch.Tensor], config: BertConfig) -> dict[str, torch.Tensor]:
    """`batch` as a model of `config` takes it: without `token_type_ids` when the model has no token types."""
    if config.has_token_types or "token_type_ids" not in batch:
        return batch
    return {k: v for k, v in batch.items() if k != "token_type_ids"}


def collate(features: Sequence[TaskFeature], pad_id: int = 0, token_types: bool = True) -> dict[str, torch.Tensor]:
    """Pad a list of features into model inputs.

    Returns:
        input_ids, attention_mask and (with `token_types`, see `BertConfig.has_token_types`) token_type_ids:
        (B, T) long, T = longest sequence in the batch; plus the features' targets (labels or start_positions /
        end_positions) when every feature has them.
    """
    batch = {"input_ids": pad([f.input_ids for f in features], pad_id)}
    if token_types:
        batch["token_type_ids"] = pad([f.token_type_ids for f in features], 0)
    batch["attention_mask"] = attention_mask([len(f.input_ids) for f in features])
    targets = [f.targets for f in features]
    keys = set(targets[0])
    if any(set(t) != keys for t in targets):
        raise ValueError("a batch mixes labelled and unlabelled features")
    for key in sorted(keys):
        values = [t[key] for t in targets]
        if isinstance(values[0], list):
            batch[key] = pad(values, IGNORE)
        else:
            dtype = torch.float32 if isinstance(values[0], float) else torch.long
            batch[key] = torch.tensor(values, dtype=dtype)
    return batch


class TaskBatches:
    """A stateless BatchSource over fine-tuning features.

    Each epoch shuffles with a permutation drawn from (seed, epoch); rank r takes every world_size-th feature
    of it, the permutation repeated cyclically so every rank has the same number of batches (DDP steps in
    lockstep). batch(epoch, index) is therefore a pure function and resume is exact. `token_types=False` leaves
    token_type_ids out of the batches (see `BertConfig.has_token_types`).
    """

    def __init__(
        self,
        features: Sequence[TaskFeature],
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        pad_id: int = 0,
        token_types: bool = True,
    ) -> None:
        if not features:
            raise ValueError("no features to batch")
        if batch_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"bad batch_size {batch_size} or rank {rank} of world_size {world_size}")
        self.features, self.batch_size, self.seed, self.shuffle = features, batch_size, seed, shuffle
        self.rank, self.world_size, self.pad_id, self.token_types = rank, world_size, pad_id, token_types
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, this rank's feature order)

    def _rank_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            n = len(self.features)
            perm = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            per_rank = math.ceil(n / self.world_size)
            self._order = (epoch, np.resize(perm, per_rank * self.world_size)[self.rank :: self.world_size])
        return self._order[1]

    def num_batches(self, epoch: int) -> int:
        return math.ceil(len(self._rank_order(epoch)) / self.batch_size)

    def batch(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_batches(epoch):
            raise IndexError(f"batch {index} out of range for epoch {epoch} ({self.num_batches(epoch)} batches)")
        chosen = self._rank_order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        return collate([self.features[i] for i in chosen], self.pad_id, self.token_types)


def sorted_batches(
    features: Sequence[TaskFeature], batch_size: int, pad_id: int = 0, token_types: bool = True
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Batches for evaluation and prediction, longest sequences first so little padding is computed.

    Yields:
        (indices of the batch's features in `features`, the collated batch); put outputs back with them.
    """
    for indices in length_sorted_batches([len(f.input_ids) for f in features], batch_size):
        yield indices, collate([features[i] for i in indices], pad_id, token_types)
