"""Atomic checkpoint directories, finding the latest one, rotation, and RNG state capture.

Layout under a run's ``out_dir``::

    checkpoints/step-00001000/   model files (written by the caller's save_model) + trainer_state.pt
    checkpoints/.tmp-...         a write in progress (or one killed midway): never read, removed on resume

A directory is first written under a temporary name in the same parent, fsynced, then renamed, so a
``step-*`` directory either is complete or does not exist; a crash or an exception while writing leaves
the previous checkpoints untouched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertkit.checkpoint.io import atomic_write

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the directory."""


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``(step, path)`` under ``out_dir``, oldest first."""
    root = out_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def write_dir_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_dir)``, fsync what it wrote, then rename ``tmp_dir`` to ``final``.

    An existing ``final`` is replaced only after the new directory is complete. If ``write`` raises,
    the temporary directory is removed and a :class:`CheckpointError` naming ``final`` is raised.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        _fsync_tree(tmp)
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"writing {final} failed, previous checkpoints are intact: {err}") from err
    if final.exists():
        trash = final.parent / f".tmp-trash-{final.name}-{os.getpid()}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash)
    else:
        os.rename(tmp, final)
    _fsync_dir(final.parent)


def rotate_checkpoints(out_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (renamed away first, so never half-deleted)."""
    for _, path in list_checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
        trash = path.parent / f".tmp-trash-{path.name}"
        os.rename(path, trash)
        shutil.rmtree(trash)


def remove_stale_temps(out_dir: Path) -> None:
    """Remove ``.tmp-*`` leftovers of writes that a killed process never finished."""
    root = out_dir / CHECKPOINTS
    for path in root.glob(".tmp-*") if root.is_dir() else []:
        shutil.rmtree(path, ignore_errors=True)


def resume_point(out_dir: Path, resume: bool, metrics_file: str) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run, which must not clobber a previous one.

    ``resume=True`` with no complete checkpoint is an error rather than a silent fresh start.
    """
    if resume:
        latest = latest_checkpoint(out_dir)
        if latest is None:
            raise FileNotFoundError(f"resume=True but {out_dir / CHECKPOINTS} holds no complete checkpoint")
        return latest
    if list_checkpoints(out_dir) or (out_dir / metrics_file).exists():
        raise FileExistsError(f"{out_dir} holds a previous run (checkpoints or {metrics_file}); "
                              "set resume=True to continue it, or choose a new out_dir")
    return None


def save_best(out_dir: Path, save_model: Callable[[Path], None], info: dict[str, Any]) -> None:
    """Replace ``out_dir/best`` with the model and a ``best.json`` describing when and why it won."""
    def write(tmp: Path) -> None:
        save_model(tmp)
        (tmp / "best.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    write_dir_atomically(out_dir / "best", write)


def save_final(out_dir: Path, save_model: Callable[[Path], None]) -> None:
    """The final model goes into ``out_dir`` itself: written complete aside, then each file moved in."""
    staging = out_dir / ".tmp-final"
    write_dir_atomically(staging, save_model)
    for entry in staging.iterdir():
        os.replace(entry, out_dir / entry.name)
    staging.rmdir()


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err


def capture_rng_state() -> dict[str, Any]:
    """The global generators dropout and data code may draw from (torch CPU/CUDA, numpy, python)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],  # plain types: loadable weights_only
        "python": random.getstate(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(_as_tuples(state["python"]))


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples; a serialisation round trip may hand back lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------- run file
def read_run_file(path: Path, settings: Any, defining: tuple[str, ...], started_by: str) -> dict[str, Any]:
    """On resume: the run's recorded information (``path``, JSON with a "settings" object), after checking
    that none of the ``defining`` settings changed, since a resume with any of them changed would not continue
    the same run. ``settings`` is the run's settings dataclass; ``started_by`` names the command in the error."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {path.parent} was not started by {started_by}")
    info = json.loads(path.read_text(encoding="utf-8"))
    before, now = info.get("settings", {}), dataclasses.asdict(settings)
    for key in defining:
        if before.get(key) != now[key]:
            raise ValueError(f"{path}: the run was started with {key}={before.get(key)!r}, resume gives "
                             f"{now[key]!r}; resume with the same settings")
    return info


def write_run_file(path: Path, data: dict[str, Any]) -> None:
    """Write the run's JSON record atomically, so a crash mid-write keeps the previous record."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))
