"""What every command module shares."""

from __future__ import annotations

import argparse
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
_ANY = (lambda v: True, "a finite number")
NUMBER_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    **dict.fromkeys(("batch_size", "eval_batch_size", "max_steps", "steps", "grad_accum", "epochs", "max_seq_len",
                     "vocab_size", "workers", "dupe_factor", "top_k", "log_every", "max_corpus_chars",
                     "student_layers", "max_query_len", "doc_stride", "patience", "min_frequency"), _AT_LEAST_1),
    **dict.fromkeys(("eval_every", "save_every", "keep_last", "eval_holdout", "phase2_steps", "seed",
                     "weight_decay", "alpha_ce", "alpha_mlm", "alpha_cos", "max_grad_norm"), _AT_LEAST_0),
    **dict.fromkeys(("lr", "temperature"), _POSITIVE),
    **dict.fromkeys(("warmup_ratio", "short_seq_prob"), _FRACTION),
    "dropout": _DROPOUT,
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
