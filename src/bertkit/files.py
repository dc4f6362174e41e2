"""Atomic file writes: the one place that writes a file so that readers see the old version or the new, never half.

A write goes to a temporary file in the destination's folder (so the rename cannot cross file systems), is flushed
to disk (``fsync`` of the file), renamed over the destination, and the folder is fsynced so the rename itself
survives a power cut. The file gets the mode a plain ``open()`` would give it (``0666`` less the user's umask,
usually ``0644``), not the ``0600`` of :func:`tempfile.mkstemp`. If anything fails, the temporary file is removed
and the destination is untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` (it writes a whole file at ``tmp``), then fsync and rename it over ``path``.

    The callback form serves writers that want a file name (``np.save``, ``savefig``, ``torch.onnx.export``).
    Returns ``path`` as a :class:`Path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as err:
        raise naming(err, path) from err
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise naming(err, path) from err
        raise
    fsync_dir(path.parent)
    return path


def naming(err: OSError, path: str | os.PathLike) -> OSError:
    """The same error (same class, errno and reason) naming ``path``, the file the user asked for, rather than
    the temporary file it happened on."""
    return OSError(err.errno, err.strerror, str(path)) if err.errno is not None else err


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 with ``\\n`` line ends on every platform."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 2) -> Path:
    """``value`` as JSON (non-ASCII kept as is), ending in a newline."""
    return write_text(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """Flush every file and folder under ``root`` (before renaming a freshly written folder into place)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fsync_file(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
