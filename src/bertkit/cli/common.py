"""What every command module shares."""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from typing import Any, NoReturn


class UsageError(Exception):
    """Bad input from the command line; printed as one line naming the cause, exit status 2."""


def run_distributed(run: Callable[[Any, Any], dict], settings: Any) -> tuple[dict, bool]:
    """Call ``run(settings, dist)`` inside torchrun's process group (a no-op without torchrun).

    Returns the run's summary and whether this process is the main one (the one that prints).
    """
    from bertkit.train.distributed import cleanup_distributed, init_distributed

    dist = init_distributed()
    try:
        return run(settings, dist), dist.is_main
    finally:
        cleanup_distributed()


# --------------------------------------------------------------------------------------------- numeric flags
# The allowed range of every numeric flag, by its destination name: one table for every command, applied to the
# parsed parser by :func:`check_numbers`, so `--batch-size 0` or `--lr -1` is refused the same way everywhere.
_AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
_AT_LEAST_0 = (lambda v: v >= 0, ">= 0")
_POSITIVE = (lambda v: v > 0, "> 0")
_FRACTION = (lambda v: 0 <= v <= 1, "between 0 and 1")
_DROPOUT = (lambda v: 0 <= v < 1, "at least 0 and below 1")
_SHARE = (lambda v: 0 < v <= 1, "above 0 and at most 1")
_ANY = (lambda v: True, "a finite number")
NUMBER_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    **dict.fromkeys(("batch_size", "eval_batch_size", "max_steps", "steps", "grad_accum", "epochs", "max_seq_len",
                     "vocab_size", "workers", "dupe_factor", "top_k", "log_every", "max_corpus_chars",
                     "student_layers", "max_query_len", "doc_stride", "patience", "min_frequency"), _AT_LEAST_1),
    **dict.fromkeys(("eval_every", "save_every", "keep_last", "eval_holdout", "phase2_steps", "seed",
                     "weight_decay", "alpha_ce", "alpha_mlm", "alpha_cos", "max_grad_norm"), _AT_LEAST_0),
    **dict.fromkeys(("threads", "limit_concurrency", "max_batch", "max_texts", "max_text_chars", "max_body_bytes",
                     "max_queue"), _AT_LEAST_1),
    **dict.fromkeys(("max_wait_ms", "shutdown_timeout"), _AT_LEAST_0),
    **dict.fromkeys(("lr", "temperature", "request_timeout", "read_timeout"), _POSITIVE),
    "port": (lambda v: 1 <= v <= 65535, "between 1 and 65535"),
    "trim_interval": _ANY,
    **dict.fromkeys(("warmup_ratio", "short_seq_prob"), _FRACTION),
    "dropout": _DROPOUT,
    "mlm_prob": _SHARE,
    "null_threshold": _ANY,
}


def check_numbers(parser: argparse.ArgumentParser) -> None:
    """Give every numeric flag of ``parser`` and its subcommands the range check ``NUMBER_RULES`` names."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                check_numbers(sub)
        elif action.dest in NUMBER_RULES and action.type in (int, float):
            action.type = _in_range(action.type, *NUMBER_RULES[action.dest])


def _in_range(convert: Callable[[str], float], test: Callable[[float], bool], text: str) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = convert(raw)  # a ValueError here is argparse's "invalid int value"
        if not math.isfinite(value) or not test(value):
            raise argparse.ArgumentTypeError(f"must be {text}, got {raw}")
        return value

    parse.__name__ = convert.__name__
    return parse


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is a ``--help`` away), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------------------ training flags
# Every recipe's command takes every shared training setting (bertkit.recipes.training), under these flags.
TRAINING_FLAGS: dict[str, dict[str, Any]] = {
    "max_steps": dict(type=int, help="optimizer steps"),
    "batch_size": dict(type=int, help="sequences per micro-batch per process"),
    "grad_accum": dict(type=int, help="micro-batches per optimizer step"),
    "lr": dict(type=float, help="peak learning rate"),
    "warmup_ratio": dict(type=float, help="share of the steps that warm the learning rate up"),
    "optimizer": dict(choices=("adamw", "lamb"), help="adamw or lamb"),
    "weight_decay": dict(type=float, help="decoupled weight decay"),
    "max_grad_norm": dict(type=float, help="clip the gradient norm to this (0: no clipping)"),
    "precision": dict(help="auto: bf16 on a GPU, fp32 on CPU"),
    "seed": dict(type=int, help="seed of the initial weights and the batch order"),
    "log_every": dict(type=int, help="log the training loss every N steps"),
    "eval_every": dict(type=int, help="evaluate every N steps (0: only at the end)"),
    "save_every": dict(type=int, help="checkpoint every N steps (0: none)"),
    "keep_last": dict(type=int, help="checkpoints kept"),
    "eval_batch_size": dict(type=int, help="sequences per evaluation batch"),
    "resume": dict(action="store_true", help="continue the run in --out from its last checkpoint"),
    "progress": dict(action="store_false", help="no progress bar"),
    "compile": dict(action="store_true", help="torch.compile the model"),
}


def add_training_flags(p: argparse.ArgumentParser, settings_class: type, *, help: dict[str, str] | None = None,
                       aliases: dict[str, tuple[str, ...]] | None = None) -> None:
    """Add every shared training flag to ``p``, with the defaults of the recipe's settings dataclass.

    ``help`` replaces a flag's help where the recipe says more (its own default rule); ``aliases`` adds older
    spellings that keep working (``--steps`` for ``--max-steps``).
    """
    from bertkit.config import PRECISIONS
    from bertkit.recipes.training import TRAINING_FIELDS

    defaults = {f.name: f.default for f in dataclasses.fields(settings_class)}
    for name in TRAINING_FIELDS:
        spec = dict(TRAINING_FLAGS[name])
        text = (help or {}).get(name) or spec.pop("help")
        spec.pop("help", None)
        if name == "precision":
            spec["choices"] = PRECISIONS
        flag = "--no-progress" if name == "progress" else "--" + name.replace("_", "-")
        shown = "" if spec.get("action") or defaults[name] is None or (help or {}).get(name) else \
            f" (default {defaults[name]})"
        p.add_argument(flag, *(aliases or {}).get(name, ()), dest=name, default=defaults[name], help=text + shown,
                       **spec)


def training_values(args: argparse.Namespace) -> dict[str, Any]:
    """The shared training settings as parsed, for the recipe's settings dataclass."""
    from bertkit.recipes.training import TRAINING_FIELDS

    return {name: getattr(args, name) for name in TRAINING_FIELDS}
