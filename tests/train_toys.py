"""Toy model and data for the training-loop tests; also a script the kill-and-resume test runs.

The toy task is linear regression with a dropout layer in front, so dropout's random stream matters
for exact resume. Batches carry an ``attention_mask`` (only for the token count) and are a pure
function of (seed, epoch, index): rank ``r`` of ``world_size`` gets the r-th slice of the batch a single
process would see, which is what the distributed-equivalence test needs.

Script use: ``python tests/train_toys.py OUT_DIR --steps 40 --save-every 10 [--delay 0.05] [--resume]``
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bertkit.train.distributed import cleanup_distributed, init_distributed
from bertkit.train.loop import TrainConfig, Trainer

DIM = 8
SEQ = 6


@dataclass
class ToyOutput:
    loss: torch.Tensor | None
    prediction: torch.Tensor


class ToyRegressor(nn.Module):
    """A two-layer net with dropout and a LayerNorm regressing ``y``; MSE loss."""

    def __init__(self, dropout: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(DIM, 16)
        self.norm = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 1)
        with torch.no_grad():
            for param in self.parameters():  # all from the generator: equal in every process
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3 + (param.ndim == 1) * 0.1)

    def forward(self, x, y=None, attention_mask=None) -> ToyOutput:
        prediction = self.fc2(self.norm(torch.relu(self.fc1(self.dropout(x))))).squeeze(-1)
        loss = None if y is None else nn.functional.mse_loss(prediction, y)
        return ToyOutput(loss=loss, prediction=prediction)


class ToySource:
    """Deterministic regression batches; rank r of world_size gets rows [r*b, (r+1)*b) of the full batch."""

    def __init__(self, batch_size: int = 4, batches: int = 8, seed: int = 0, rank: int = 0,
                 world_size: int = 1, delay: float = 0.0) -> None:
        self.batch_size, self.batches, self.seed = batch_size, batches, seed
        self.rank, self.world_size, self.delay = rank, world_size, delay
        self.true_w = 0.3 * torch.randn(DIM, generator=torch.Generator().manual_seed(seed))

    def num_batches(self, epoch: int) -> int:
        return self.batches

    def batch(self, epoch: int, index: int) -> dict[str, torch.Tensor]:
        if self.delay:
            time.sleep(self.delay)
        full = self.batch_size * self.world_size
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + index)
        x = torch.randn(full, DIM, generator=generator)
        y = x @ self.true_w + 0.01 * torch.randn(full, generator=generator)
        mask = (torch.arange(SEQ) < torch.randint(1, SEQ + 1, (full, 1), generator=generator)).long()
        rows = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return {"x": x[rows], "y": y[rows], "attention_mask": mask[rows]}


def held_out_loss(model: nn.Module) -> dict[str, float]:
    """An ``evaluate`` function: MSE on 256 examples no training batch contains (epoch 999)."""
    batch = ToySource(batch_size=256).batch(999, 0)
    return {"loss": model(**batch).loss.item()}


def save_state_dict(model: nn.Module, path: Path) -> None:
    torch.save(model.state_dict(), path / "model.pt")


def toy_config(out_dir: Path, **overrides) -> TrainConfig:
    settings = dict(max_steps=20, lr=0.05, warmup_steps=2, log_every=1, progress=False, seed=3, keep_last=2)
    return TrainConfig(out_dir=out_dir, **{**settings, **overrides})


def ddp_worker(rank: int, world_size: int, port: int, out_dirs: list[str], batch_size: int,
               overrides: dict) -> None:
    """One rank of the distributed test: joins through torchrun's environment variables."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = init_distributed()
    try:
        source = ToySource(batch_size=batch_size, rank=info.rank, world_size=info.world_size)
        config = toy_config(Path(out_dirs[rank]), **overrides)
        Trainer(ToyRegressor(dropout=0.0), config, source, save_model=save_state_dict, dist=info).fit()
    finally:
        cleanup_distributed()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = toy_config(args.out_dir, max_steps=args.steps, save_every=args.save_every, resume=args.resume,
                        grad_accum=2)
    Trainer(ToyRegressor(dropout=0.2), config, ToySource(delay=args.delay), save_model=save_state_dict).fit()


if __name__ == "__main__":
    main()
