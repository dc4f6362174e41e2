"""The run folder: its lock, atomic checkpoint directories, finding the newest sound one, rotation, RNG state.

Layout under a run's ``out_dir``::

    .bertkit-run.lock            held (``flock``) by the one process running in this folder; holds its pid
    checkpoints/step-00001000/   model files (written by the caller's save_model) + trainer_state.pt
                                 + checkpoint.json (size and sha256 of every file, to verify on resume)
    checkpoints/.tmp-...-PID     a write in progress (or one killed midway): never read; removed on resume
                                 once process PID is gone

A directory is first written under a temporary name in the same parent, fsynced, then renamed, so a
``step-*`` directory either is complete or does not exist; a crash or an exception while writing leaves
the previous checkpoints untouched. A checkpoint damaged afterwards (a disk fault, a truncating copy) fails
its manifest check, and resume falls back to the newest one that passes.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertkit import files

log = logging.getLogger("bertkit")

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
CHECKPOINT_MANIFEST = "checkpoint.json"
LOCK_FILE = ".bertkit-run.lock"
FINAL_MARKER = "config.json"  # written last into the run folder: a finished model is there
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_TEMP_PID = re.compile(r"^\.tmp-.*-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the directory."""


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock; the message names the folder and its pid."""


# ------------------------------------------------------------------------------------------------- run lock
class RunLock:
    """An exclusive ``flock`` on ``out_dir/.bertkit-run.lock``: one process per run folder.

    The kernel drops the lock when its holder exits, however it exits (``kill -9`` included), so a crashed
    run never leaves a folder locked. The file stays in place (deleting it would let two processes lock two
    different files of the same name); it records the holder's pid for the refusal message. A folder the lock
    itself created and nothing else was written to (a run refused by a later check) is removed again.
    Use as a context manager; ``enabled=False`` (ranks other than 0) holds nothing.
    """

    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(out_dir) / LOCK_FILE
        self.enabled = enabled
        self._fd: int | None = None
        self._made_folder = False

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        self._made_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise RunFolderBusy(f"{self.path.parent}: in use by process {holder} (it holds {self.path}); wait "
                                "for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        if self._made_folder and [p.name for p in self.path.parent.iterdir()] == [LOCK_FILE]:
            self.path.unlink()
            self.path.parent.rmdir()
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None


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
    """The newest checkpoint that passes :func:`verify_checkpoint`; damaged newer ones are skipped with a warning."""
    for _, path in reversed(list_checkpoints(out_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        log.warning("%s: skipped, damaged (%s); trying the one before", path, problem)
    return None


def write_checkpoint_manifest(directory: Path) -> None:
    """Record every file's size and sha256 in ``checkpoint.json``, the evidence :func:`verify_checkpoint` reads."""
    entries = {str(f.relative_to(directory)): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
               for f in sorted(directory.rglob("*")) if f.is_file() and f.name != CHECKPOINT_MANIFEST}
    files.write_json(directory / CHECKPOINT_MANIFEST, {"files": entries})


def verify_checkpoint(directory: Path) -> str | None:
    """Why ``directory`` cannot be trusted (a missing, resized or altered file), or None if it checks out.

    A checkpoint written before manifests existed (no ``checkpoint.json``) is accepted as it is.
    """
    manifest = directory / CHECKPOINT_MANIFEST
    if not manifest.is_file():
        return None
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{manifest} unreadable: {err}"
    for name, expected in entries.items():
        path = directory / name
        if not path.is_file():
            return f"{name} missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, {expected['bytes']} were written"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_dir_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_dir)``, fsync what it wrote, then rename ``tmp_dir`` to ``final``.

    An existing ``final`` is replaced only after the new directory is complete. If ``write`` raises,
    the temporary directory is removed and an error naming ``final`` is raised: the ``OSError`` of a full or
    read-only disk, a :class:`CheckpointError` for anything else.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        write_checkpoint_manifest(tmp)
        files.fsync_tree(tmp)
    except Exception as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno is not None:  # a full or read-only disk, say
            raise files.naming(err, final) from err
        raise CheckpointError(f"writing {final} failed, previous checkpoints are intact: {err}") from err
    if final.exists():
        trash = final.parent / f".tmp-trash-{final.name}-{os.getpid()}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash)
    else:
        os.rename(tmp, final)
    files.fsync_dir(final.parent)


def rotate_checkpoints(out_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (renamed away first, so never half-deleted)."""
    for _, path in list_checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
        trash = path.parent / f".tmp-trash-{path.name}-{os.getpid()}"
        os.rename(path, trash)
        shutil.rmtree(trash)


def remove_stale_temps(out_dir: Path) -> None:
    """Remove ``.tmp-*-PID`` leftovers of writes that a killed process never finished.

    Only this process's own temporaries and those of processes no longer running are removed: a write in
    progress by a live process is never touched, whoever holds the lock.
    """
    for path in [*out_dir.glob(".tmp-*"), *(out_dir / CHECKPOINTS).glob(".tmp-*")]:
        match = _TEMP_PID.match(path.name)
        if match and (int(match.group(1)) == os.getpid() or not _process_alive(int(match.group(1)))):
            shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def resume_point(out_dir: Path, resume: bool, metrics_file: str) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run, which must not clobber a previous one.

    ``resume=True`` with no complete checkpoint is an error rather than a silent fresh start. A folder counts as
    a previous run only once something worth keeping was saved in it (a checkpoint, or the final model), so a
    run that failed before its first save can simply be started again (its ``metrics_file`` is then restarted).
    """
    if resume:
        latest = latest_checkpoint(out_dir)
        if latest is None:
            raise FileNotFoundError(f"{out_dir / CHECKPOINTS}: no complete checkpoint to resume from; start the run "
                                    "again without resume")
        return latest
    if list_checkpoints(out_dir) or (out_dir / FINAL_MARKER).exists():
        raise FileExistsError(f"{out_dir} holds a previous run (checkpoints or a final model); "
                              "set resume=True to continue it, or choose a new out_dir")
    (out_dir / metrics_file).unlink(missing_ok=True)
    return None


def save_best(out_dir: Path, save_model: Callable[[Path], None], info: dict[str, Any]) -> None:
    """Replace ``out_dir/best`` with the model and a ``best.json`` describing when and why it won."""
    def write(tmp: Path) -> None:
        save_model(tmp)
        (tmp / "best.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    write_dir_atomically(out_dir / "best", write)


def save_final(out_dir: Path, save_model: Callable[[Path], None]) -> None:
    """The final model goes into ``out_dir`` itself: written complete aside, then each file moved in, the marker
    of a finished model (``config.json``) last."""
    staging = out_dir / f".tmp-final-{os.getpid()}"
    write_dir_atomically(staging, save_model)
    (staging / CHECKPOINT_MANIFEST).unlink()
    entries = sorted(staging.iterdir(), key=lambda entry: entry.name == FINAL_MARKER)
    for entry in entries:
        os.replace(entry, out_dir / entry.name)
    staging.rmdir()
    files.fsync_dir(out_dir)


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


def finished_run(out_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    """The summary a resume of an already finished run returns: the recorded one, flagged, with nothing trained."""
    log.warning("%s: the run already finished (step %s); nothing to resume", out_dir, info["summary"].get("step"))
    return {**info["summary"], "already_finished": True}


def write_run_file(path: Path, data: dict[str, Any]) -> None:
    """Write the run's JSON record atomically, so a crash mid-write keeps the previous record."""
    files.write_json(path, data)
