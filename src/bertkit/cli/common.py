"""What every command module shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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
