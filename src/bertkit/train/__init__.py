"""The training loop, optimisers, checkpoints and distributed set-up shared by every recipe."""

from bertkit.train.distributed import DistInfo, cleanup_distributed, init_distributed
from bertkit.train.loop import BatchSource, Phase, TrainConfig, Trainer
from bertkit.train.optim import Lamb, build_optimizer

__all__ = [
    "BatchSource",
    "DistInfo",
    "Lamb",
    "Phase",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "cleanup_distributed",
    "init_distributed",
]
