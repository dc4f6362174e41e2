"""The training section every recipe shares, declared once.

Pretraining, distillation and fine-tuning differ in their data and model, not in how they train: each recipe's
settings extend :class:`TrainingSettings`, so a training setting has the same name (and, through
:func:`bertkit.cli.common.add_training_flags`, the same command-line flag) in every recipe, and one method maps
it onto the loop's :class:`~bertkit.train.loop.TrainConfig`. A recipe changes only the defaults its method
calls for (distillation's learning rate, fine-tuning's seed ...). The fields stay flat in each recipe's settings,
so the run files (``pretrain.json``, ``distill.json``, ``finetune.json``) keep their layout.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertkit.train.loop import TrainConfig

OPTIMIZERS = ("adamw", "lamb")


@dataclass(kw_only=True)
class TrainingSettings:
    """How to train: length, batches, optimiser, precision, cadence of logging, evaluation and checkpoints.

    ``max_grad_norm`` None or 0: no clipping. ``eval_every`` / ``save_every`` 0: only at the end / no checkpoints.
    ``resume`` continues the run in the output folder from its last checkpoint; ``compile`` runs torch.compile.
    """

    max_steps: int | None = None
    batch_size: int | None = 32
    grad_accum: int = 1
    lr: float | None = None
    warmup_ratio: float | None = None
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    precision: str = "auto"
    seed: int = 0
    log_every: int | None = 50
    eval_every: int | None = 500
    save_every: int | None = 1000
    keep_last: int = 2
    eval_batch_size: int = 64
    resume: bool = False
    progress: bool = True
    compile: bool = False

    def train_config(self, out_dir: str | os.PathLike, **decided: Any) -> TrainConfig:
        """The loop's config: every shared setting under its own name, then what the recipe ``decided``
        (a learning rate by task, the evaluation cadence of an epoch ...)."""
        loop_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        shared = {name: getattr(self, name) for name in TRAINING_FIELDS if name in loop_fields}
        return TrainConfig(out_dir=Path(out_dir), **{**shared, **decided})


TRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(TrainingSettings))
