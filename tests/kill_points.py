"""Run ``bertkit`` in this process, dying by SIGKILL (as from ``kill -9``) at a chosen point, or pausing there.

    python tests/kill_points.py POINT STEP -- bertkit arguments...

POINT is where: ``step`` (gradients computed, the optimizer step not yet taken), ``save`` (the checkpoint of STEP
written to its temporary folder, not yet renamed into place), ``rotation`` (an old checkpoint renamed away, not yet
deleted, after the save of STEP), ``pause`` (before step STEP, until the file named by BERTKIT_GO exists) or
``none``. Used by tests/test_run_folder.py; the kill is the process's own, so the point is exact.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, at_step: int) -> None:
    from bertkit.train import checkpointing as ckpt
    from bertkit.train.loop import Trainer

    if point == "step":
        optimizer_step = Trainer._optimizer_step

        def step_then_die(self):
            if self.step + 1 == at_step:
                die()
            optimizer_step(self)

        Trainer._optimizer_step = step_then_die
    elif point == "save":
        write_manifest = ckpt.write_checkpoint_manifest

        def manifest_then_die(directory: Path) -> None:
            write_manifest(directory)
            if f"step-{at_step:08d}" in directory.name:
                die()

        ckpt.write_checkpoint_manifest = manifest_then_die
    elif point == "rotation":
        rmtree = shutil.rmtree

        def rmtree_or_die(path, *args, **kwargs):
            if ".tmp-trash-step" in str(path) and (Path(path).parent / f"step-{at_step:08d}").is_dir():
                die()
            rmtree(path, *args, **kwargs)

        shutil.rmtree = rmtree_or_die
    elif point == "pause":
        train_step = Trainer._train_step

        def wait_then_step(self):
            while self.step + 1 == at_step and not Path(os.environ["BERTKIT_GO"]).exists():
                time.sleep(0.05)
            train_step(self)

        Trainer._train_step = wait_then_step


def main() -> int:
    point, at_step, separator, *argv = sys.argv[1:]
    assert separator == "--"
    install(point, int(at_step))
    from bertkit.cli import main as bertkit

    return bertkit(argv)


if __name__ == "__main__":
    sys.exit(main())
