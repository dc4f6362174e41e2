"""The one training loop, for pretraining and fine-tuning alike.

A step is ``grad_accum`` micro-batches, each ``model(**batch).loss / grad_accum`` back-propagated,
then gradient clipping, the learning rate for this step (a pure function of the step) and one
optimizer update. Data comes from a stateless :class:`BatchSource`, so the data position is two
integers and a resumed run continues exactly where the checkpoint stopped.

A run ends after ``max_steps`` steps or, with ``max_minutes``, once that much training time is spent (whichever
comes first). Training time counts the steps only, not evaluation or checkpoints, and is carried across resumes;
the learning-rate schedule of a budgeted run follows the fraction of the budget spent, so it always completes.

Files (rank 0 only) under ``config.out_dir``: ``metrics.jsonl`` (see ``train.logging``),
``checkpoints/step-NNNNNNNN/`` (model via ``save_model`` + ``trainer_state.pt``), ``best/`` (the model
with the best ``best_metric`` so far, plus ``best.json``) and the final model in ``out_dir`` itself.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from bertkit.config import DTYPES, PRECISIONS
from bertkit.train import checkpointing as ckpt
from bertkit.train.distributed import DistInfo, all_gather_objects, all_reduce_sum, barrier, wrap_model
from bertkit.train.logging import METRICS_FILE, MetricsLogger, Progress
from bertkit.train.optim import OPTIMIZERS, SCHEDULES, build_optimizer, lr_factor, lr_factor_at, warmup_steps_for

# The step count of a run that only its time budget ends.
UNBOUNDED_STEPS = 2**62


class BatchSource(Protocol):
    """Random-access micro-batches for this rank; ``batch`` is deterministic in (epoch, index)."""

    def num_batches(self, epoch: int) -> int: ...

    def batch(self, epoch: int, index: int) -> dict[str, torch.Tensor]: ...


@dataclass
class TrainConfig:
    """Everything the loop needs to know. ``max_steps`` counts optimizer steps.

    ``max_steps=None`` derives it from ``epochs`` (micro-batches over all epochs // grad_accum), or with
    ``max_minutes`` and no ``epochs`` leaves the length to the budget alone.
    ``max_minutes``: a budget of training time; warm-up then spans ``warmup_ratio`` of the budget (or of
    ``max_steps``, whichever is further along) and the decay the rest.
    ``warmup_steps`` overrides ``warmup_ratio``. ``max_grad_norm=None`` disables clipping.
    ``log_every`` / ``eval_every`` / ``save_every`` are in steps; 0 turns evaluation or checkpoints off
    (the last step is always logged and, with an ``evaluate`` function, evaluated).
    ``precision="auto"``: bf16 autocast on CUDA when supported, fp32 otherwise; "fp16" adds a GradScaler.
    ``resume=True`` continues from the latest complete checkpoint and fails if there is none.
    """

    out_dir: Path | str
    max_steps: int | None = None
    epochs: int | None = None
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None
    schedule: str = "linear"
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    max_grad_norm: float | None = 1.0
    precision: str = "auto"
    log_every: int = 50
    eval_every: int = 0
    save_every: int = 0
    keep_last: int = 2
    seed: int = 0
    resume: bool = False
    progress: bool = True
    compile: bool = False
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        check_minutes(self.max_minutes, "TrainConfig.max_minutes")
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"TrainConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("grad_accum", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "save_every", "keep_last"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "out_dir": str(self.out_dir), "betas": list(self.betas)}


def check_minutes(minutes: float | None, name: str) -> None:
    """A time budget must be a finite positive number of minutes (None: no budget)."""
    if minutes is None:
        return
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not math.isfinite(minutes) \
            or minutes <= 0:
        raise ValueError(f"{name} must be a positive number of minutes, got {minutes!r}")


class BudgetError(ValueError):
    """The time budget ran out before one training step finished: there is no trained model to write."""


@dataclass
class Phase:
    """A stretch of ``steps`` optimizer steps with its own data, e.g. sequence length 128 then 512.

    The learning-rate schedule spans all phases together; ``grad_accum=None`` keeps the config's value.
    """

    name: str
    train: BatchSource
    steps: int
    grad_accum: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or (self.grad_accum is not None and self.grad_accum < 1):
            raise ValueError(f"phase {self.name!r}: steps and grad_accum must be >= 1")


@dataclass
class DataPosition:
    """The next micro-batch to read: phase, epoch and index within that epoch (for this rank)."""

    phase: int = 0
    epoch: int = 0
    index: int = 0


def save_pretrained(model: nn.Module, path: Path) -> None:
    """Default ``save_model``: the model's own standard-layout writer."""
    model.save_pretrained(path)


class Trainer:
    """Trains ``model`` on ``train`` (or on ``phases``) as ``config`` says; see :meth:`fit`.

    Args:
        evaluate: called on rank 0 with the unwrapped model in eval mode under ``torch.no_grad``;
            returns metrics such as ``{"loss": 0.3, "accuracy": 0.9}``. Other ranks wait meanwhile.
        save_model: writes the model to a directory in the standard layout.
        best_metric: a key of ``evaluate``'s result; the best model so far is kept in ``out_dir/best``.
        phases: consecutive training phases; when given, ``train`` must be None and ``config.max_steps``
            None or the phases' total.
        dist: this process's place in a torchrun job (default: one process, CUDA if available).
        clock: seconds as a float (default ``time.perf_counter``); the time budget and the timings read
            it, so a test can pass a fake one.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train: BatchSource | None,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        save_model: Callable[[nn.Module, Path], None] = save_pretrained,
        best_metric: str | None = None,
        greater_is_better: bool = True,
        phases: Sequence[Phase] | None = None,
        dist: DistInfo | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config, self.evaluate, self.save_model = config, evaluate, save_model
        self.clock = clock or time.perf_counter
        self.budget_s = None if config.max_minutes is None else 60.0 * config.max_minutes
        self.best_metric, self.greater_is_better = best_metric, greater_is_better
        self.dist = dist or DistInfo.single()
        self.phases = self._resolve_phases(train, phases)
        self.max_steps = sum(p.steps for p in self.phases)
        self.warmup_steps = warmup_steps_for(self.max_steps, config.warmup_steps, config.warmup_ratio)
        self.raw_model = model.to(self.dist.device)
        self.ddp_model = wrap_model(self.raw_model, self.dist)
        self.model = torch.compile(self.ddp_model) if config.compile else self.ddp_model
        self.dtype = resolve_precision(config.precision, self.dist.device)
        self.scaler = torch.amp.GradScaler(self.dist.device.type, enabled=self.dtype == torch.float16)
        self.optimizer = build_optimizer(self.raw_model, config.optimizer, lr=config.lr,
                                         weight_decay=config.weight_decay, betas=config.betas, eps=config.eps)
        self.step, self.position = 0, DataPosition()
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.last_record: dict[str, Any] = {}
        self.last_eval: dict[str, float] = {}
        self._reset_window()
        self._grad_norm = torch.zeros((), device=self.dist.device)
        self._lr = 0.0
        self._elapsed_before = 0.0
        self.train_seconds = 0.0  # time spent in training steps, across resumes: what the budget counts

    def _resolve_phases(self, train: BatchSource | None, phases: Sequence[Phase] | None) -> list[Phase]:
        cfg = self.config
        if phases is not None:
            if train is not None:
                raise ValueError("Trainer: pass either train or phases, not both")
            total = sum(p.steps for p in phases)
            if cfg.max_steps is not None and cfg.max_steps != total:
                raise ValueError(f"TrainConfig.max_steps={cfg.max_steps} but the phases total {total} steps")
            return [dataclasses.replace(p, grad_accum=p.grad_accum or cfg.grad_accum) for p in phases]
        if train is None:
            raise ValueError("Trainer: train (a BatchSource) is required when phases is None")
        steps = cfg.max_steps
        if steps is None and cfg.epochs is None and cfg.max_minutes is not None:
            steps = UNBOUNDED_STEPS
        if steps is None:
            if cfg.epochs is None:
                raise ValueError("TrainConfig: set max_steps, epochs or max_minutes")
            steps = sum(train.num_batches(e) for e in range(cfg.epochs)) // cfg.grad_accum
        if steps < 1:
            raise ValueError(f"TrainConfig: the run has {steps} optimizer steps; need at least 1")
        return [Phase("train", train, steps, cfg.grad_accum)]

    # ----------------------------------------------------------------------------------- the run
    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` (resuming first if asked), save the final model, return a summary."""
        resume_from = ckpt.resume_point(self.config.out_dir, self.config.resume, METRICS_FILE)
        barrier(self.dist)  # every rank has checked before rank 0 writes anything
        if resume_from is not None:
            self._load_checkpoint(resume_from)
        else:
            _seed_everything(self.config.seed + self.dist.rank)
        main = self.dist.is_main
        self.logger = MetricsLogger(self.config.out_dir, enabled=main,
                                    resume_step=self.step if resume_from is not None else None)
        total = None if self.max_steps == UNBOUNDED_STEPS else self.max_steps
        progress = Progress(total, self.step, enabled=main and self.config.progress)
        self._start_time = self._window_start = self.clock()
        self.raw_model.train()
        try:
            while not self._finished():
                started = self.clock()
                self._train_step()
                self.train_seconds += self.clock() - started
                self.step += 1
                self._check_budget_fits_a_step(resumed=resume_from is not None)
                progress.update(self._after_step())
            self._save_final()
        except BudgetError:
            self.logger.close()
            if resume_from is None and main:
                self.logger.path.unlink(missing_ok=True)  # the empty log of a run that never trained
            raise
        finally:
            progress.close()
            self.logger.close()
        barrier(self.dist)
        return self._summary()

    def _finished(self) -> bool:
        """Every step done, or the time budget spent (the same answer on every rank: rank 0's clock decides)."""
        if self.step >= self.max_steps:
            return True
        if self.budget_s is None:
            return False
        spent = self.train_seconds >= self.budget_s
        if self.dist.is_distributed:
            flag = torch.tensor(float(spent), device=self.dist.device)
            torch.distributed.broadcast(flag, src=0)
            spent = bool(flag.item())
        return spent

    def _check_budget_fits_a_step(self, *, resumed: bool) -> None:
        if self.budget_s is not None and self.step == 1 and not resumed and self.train_seconds >= self.budget_s:
            raise BudgetError(f"max_minutes={self.config.max_minutes:g} is shorter than one training step "
                              f"({self.train_seconds:.1f} s): no model written; give a larger budget")

    def _progress(self) -> float:
        """The fraction of the run done before this step: of the budget, or of max_steps if that is further."""
        steps = 0.0 if self.max_steps == UNBOUNDED_STEPS else self.step / self.max_steps
        return max(steps, self.train_seconds / self.budget_s)

    def _train_step(self) -> None:
        phase = self._enter_phase()
        for i in range(phase.grad_accum):
            batch = self._next_batch(phase)
            sync = i == phase.grad_accum - 1 or not self.dist.is_distributed
            with nullcontext() if sync else self.ddp_model.no_sync():
                with self._autocast():
                    loss = self.model(**batch).loss
                if loss is None:
                    raise ValueError("the model returned loss=None: the batch must hold the labels")
                loss = loss / phase.grad_accum
                self.scaler.scale(loss).backward()
            self._window_loss += loss.detach().float()
            self._window_tokens += batch["attention_mask"].sum()
        self._optimizer_step()

    def _optimizer_step(self) -> None:
        cfg = self.config
        if self.budget_s is None:
            factor = lr_factor(self.step, warmup_steps=self.warmup_steps, total_steps=self.max_steps,
                               schedule=cfg.schedule)
        else:
            factor = lr_factor_at(self._progress(), warmup_share=cfg.warmup_ratio, schedule=cfg.schedule)
        lr = cfg.lr * factor
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.max_grad_norm or float("inf")
        self._grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._lr = lr
        self._window_steps += 1

    def _after_step(self) -> dict[str, Any] | None:
        """Log, evaluate and checkpoint as due; returns the logged record, if any, for the progress bar."""
        cfg, last = self.config, self._finished()
        record = self._log() if self.step % cfg.log_every == 0 or last else None
        if self.evaluate is not None and (_due(self.step, cfg.eval_every) or last):
            self._evaluate()
        if _due(self.step, cfg.save_every) or (last and cfg.save_every):
            self._save_checkpoint()
        return record

    # ------------------------------------------------------------------------------------- data
    def _enter_phase(self) -> Phase:
        """The phase of the current step; entering a new phase restarts its data at (0, 0)."""
        boundary = 0
        for index, phase in enumerate(self.phases):
            boundary += phase.steps
            if self.step < boundary:
                if index != self.position.phase:
                    self.position = DataPosition(phase=index)
                return phase
        raise AssertionError("step beyond the last phase")

    def _next_batch(self, phase: Phase) -> dict[str, torch.Tensor]:
        pos = self.position
        while pos.index >= (n := phase.train.num_batches(pos.epoch)):
            if n == 0:
                raise ValueError(f"phase {phase.name!r}: the BatchSource is empty in epoch {pos.epoch}")
            pos.epoch, pos.index = pos.epoch + 1, 0
        batch = phase.train.batch(pos.epoch, pos.index)
        pos.index += 1
        if "attention_mask" not in batch:
            raise KeyError(f"phase {phase.name!r}: batches must hold 'attention_mask', got {sorted(batch)}")
        return {k: v.to(self.dist.device, non_blocking=True) for k, v in batch.items()}

    def _autocast(self):
        return torch.autocast(self.dist.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    # ---------------------------------------------------------------------------- logging, eval
    def _reset_window(self) -> None:
        """Loss and tokens summed since the last log line (on device, so no sync per step)."""
        self._window_loss = torch.zeros((), device=self.dist.device)
        self._window_tokens = torch.zeros((), dtype=torch.long, device=self.dist.device)
        self._window_steps = 0

    def _log(self) -> dict[str, Any]:
        world = self.dist.world_size
        sums = torch.stack([self._window_loss.double(), self._window_tokens.double()])
        sums = all_reduce_sum(sums, self.dist)
        now = self.clock()
        record = {
            "step": self.step,
            "epoch": self.position.epoch,
            "loss": sums[0].item() / world / max(self._window_steps, 1),
            "lr": self._lr,
            "grad_norm": self._grad_norm.item(),
            "tokens_per_s": sums[1].item() / max(now - self._window_start, 1e-9),
            "elapsed": self._elapsed(),
        }
        self.logger.write(record)
        self.last_record = record
        self._reset_window()
        self._window_start = now
        return record

    def _evaluate(self) -> None:
        start = self.clock()
        if self.dist.is_main:
            self.raw_model.eval()
            with torch.no_grad(), self._autocast():
                metrics = {k: float(v) for k, v in self.evaluate(self.raw_model).items()}
            self.raw_model.train()
            self.logger.write({"step": self.step, **{f"eval_{k}": v for k, v in metrics.items()},
                               "duration": self.clock() - start, "elapsed": self._elapsed()})
            self.last_eval = metrics
            self._keep_best(metrics)
        barrier(self.dist)
        self._window_start += self.clock() - start  # tokens_per_s counts training time only

    def _keep_best(self, metrics: dict[str, float]) -> None:
        if self.best_metric is None:
            return
        if self.best_metric not in metrics:
            raise KeyError(f"best_metric {self.best_metric!r} is not an evaluation metric: {sorted(metrics)}")
        value, best = metrics[self.best_metric], self.best_value
        if best is not None and not (value > best if self.greater_is_better else value < best):
            return
        self.best_value, self.best_step = value, self.step
        info = {"step": self.step, "metric": self.best_metric, "value": value, "metrics": metrics}
        ckpt.save_best(self.config.out_dir, lambda tmp: self.save_model(self.raw_model, tmp), info)

    def _elapsed(self) -> float:
        return self._elapsed_before + self.clock() - self._start_time

    # ----------------------------------------------------------------------- checkpoints, resume
    def _trainer_state(self) -> dict[str, Any]:
        """Everything besides the code needed to continue exactly. Collective: call on every rank."""
        window = all_reduce_sum(self._window_loss.clone(), self.dist) / self.dist.world_size
        return {
            "step": self.step,
            "position": dataclasses.asdict(self.position),
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": all_gather_objects(ckpt.capture_rng_state(), self.dist),
            "window": {"loss": window.cpu(), "steps": self._window_steps},
            "best": {"value": self.best_value, "step": self.best_step},
            "elapsed": self._elapsed(),
            "train_seconds": self.train_seconds,
            "config": self.config.to_dict(),
        }

    def _save_checkpoint(self) -> None:
        state = self._trainer_state()
        if self.dist.is_main:
            def write(tmp: Path) -> None:
                self.save_model(self.raw_model, tmp)
                torch.save(state, tmp / ckpt.STATE_FILE)

            ckpt.write_dir_atomically(ckpt.checkpoint_path(self.config.out_dir, self.step), write)
            ckpt.rotate_checkpoints(self.config.out_dir, self.config.keep_last)
        barrier(self.dist)

    def _load_checkpoint(self, path: Path) -> None:
        state = ckpt.load_trainer_state(path)
        if len(state["rng"]) != self.dist.world_size:
            raise ckpt.CheckpointError(f"{path} was written by {len(state['rng'])} processes; resuming "
                                       f"with {self.dist.world_size} would not continue the same run")
        if self.budget_s is not None and state["config"].get("max_minutes") is None:
            raise ckpt.CheckpointError(f"{path}: the run was not started with a time budget; resume it without "
                                       "max_minutes")
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.position = state["step"], DataPosition(**state["position"])
        self._window_loss = state["window"]["loss"].to(self.dist.device)
        self._window_steps = state["window"]["steps"]
        self.best_value, self.best_step = state["best"]["value"], state["best"]["step"]
        self._elapsed_before = state["elapsed"]
        self.train_seconds = state.get("train_seconds", 0.0)
        if self.dist.is_main:
            ckpt.remove_stale_temps(self.config.out_dir)
        ckpt.restore_rng_state(state["rng"][self.dist.rank])

    def _save_final(self) -> None:
        if self.dist.is_main:
            ckpt.save_final(self.config.out_dir, lambda tmp: self.save_model(self.raw_model, tmp))

    def _summary(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "loss": self.last_record.get("loss"),
            "elapsed": self._elapsed(),
            "train_seconds": self.train_seconds,
            **{f"eval_{k}": v for k, v in self.last_eval.items()},
            "best_metric": self.best_metric,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "out_dir": str(self.config.out_dir),
        }


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for ``precision``; "auto" means bf16 on CUDA when supported, else fp32."""
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return DTYPES[precision]


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _seed_everything(seed: int) -> None:
    """Seed the global generators that dropout (torch) and any legacy data code (numpy, random) use."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
