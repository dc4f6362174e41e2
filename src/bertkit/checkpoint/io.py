"""Reading and writing checkpoint directories in the standard layout.

A directory holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``, or a sharded
index of either). Names are translated through :mod:`bertkit.checkpoint.names`; every missing,
unexpected or mis-shaped tensor is listed in the error, never silently dropped. Files are written
through a temporary name and renamed, so a failed save leaves the previous file intact.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from bertkit.checkpoint import names
from bertkit.config import BertConfig

log = logging.getLogger("bertkit")
T = TypeVar("T", bound="PretrainedMixin")

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Standard-name prefixes of heads a backbone may legitimately leave unused (reported, not an error).
HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "pooler.")


class CheckpointError(ValueError):
    """A checkpoint directory or its tensors do not match the model; the message lists each problem."""


@dataclass
class LoadReport:
    """What loading did beyond a one-to-one copy, so callers can show or assert it."""

    fresh: list[str] = field(default_factory=list)  # ours, initialised anew (a head the checkpoint lacks)
    unused: list[str] = field(default_factory=list)  # theirs, heads present in the file but not in the model
    missing: list[str] = field(default_factory=list)  # ours, absent (only non-empty with strict=False)
    unexpected: list[str] = field(default_factory=list)  # theirs, unknown (only non-empty with strict=False)
    mismatched: list[str] = field(default_factory=list)  # shape differences (only with strict=False)


def find_weights(directory: Path) -> Path:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Standard-named tensors from a safetensors / .bin file or a sharded index of either."""
    if path.name.endswith(".index.json"):
        index = json.loads(path.read_text(encoding="utf-8"))
        shards = sorted(set(index.get("weight_map", {}).values()))
        if not shards:
            raise CheckpointError(f"{path}: index has no 'weight_map'")
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_state_dict(path.parent / shard))
        return state
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file missing")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated files surface from deep inside the readers
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp)`` then rename over ``path``: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` for every bertkit model class.

    A class sets nothing but its constructor; the mapping to standard names is derived from its own
    parameter names. Task classes read their label count from ``config.extra`` (``id2label``).
    """

    config: BertConfig
    load_report: LoadReport

    @classmethod
    def from_pretrained(cls: type[T], path: str | os.PathLike, strict: bool = True, **kwargs: Any) -> T:
        directory = Path(path)
        weights = find_weights(directory)
        config = BertConfig.from_json_file(directory / "config.json")
        model = cls(config, **kwargs)  # type: ignore[call-arg]
        model.load_report = load_standard_state(model, read_state_dict(weights), strict, source=str(weights))
        return model

    def save_pretrained(self, path: str | os.PathLike) -> None:
        directory = Path(path)
        state = standard_state_dict(self)  # type: ignore[arg-type]
        config = self.config.to_dict()
        config["architectures"] = [type(self).__name__]
        atomic_write(
            directory / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"})
        )
        atomic_write(
            directory / "config.json",
            lambda tmp: Path(tmp).write_text(
                json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            ),
        )


def _is_encoder_only(model: torch.nn.Module) -> bool:
    return not any(k.startswith(names.ENCODER_PREFIX) for k in model.state_dict())


def standard_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under standard names, Q/K/V split, ready for safetensors."""
    out: dict[str, torch.Tensor] = {}
    for ours, tensor in model.state_dict().items():
        theirs = names.to_standard(ours)
        parts = names.split_qkv(tensor) if len(theirs) == 3 else (tensor,)
        for name, part in zip(theirs, parts, strict=True):
            out[name] = part.detach().contiguous().cpu()
    return out


def _normalise_keys(state: dict[str, torch.Tensor], encoder_only: bool) -> dict[str, torch.Tensor]:
    """Bring a file's keys to the model's layout: aliases resolved, the 'bert.' prefix added or removed."""
    out = {}
    for key, tensor in state.items():
        key = names.normalise_standard(key)
        is_head = key.startswith(HEAD_PREFIXES[:3])
        if encoder_only and key.startswith(names.ENCODER_PREFIX):
            key = key[len(names.ENCODER_PREFIX) :]
        elif not encoder_only and not is_head and not key.startswith(names.ENCODER_PREFIX):
            key = names.ENCODER_PREFIX + key
        out[key] = tensor
    if "cls.predictions.bias" not in out and "cls.predictions.decoder.bias" in out:
        out["cls.predictions.bias"] = out["cls.predictions.decoder.bias"]
    return out


def load_standard_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool, source: str
) -> LoadReport:
    """Copy standard-named tensors into ``model``; raise listing every problem unless ``strict=False``."""
    state = _normalise_keys(state, _is_encoder_only(model))
    report = LoadReport()
    used: set[str] = set()
    own = model.state_dict()
    for ours, target in own.items():
        theirs = names.to_standard(ours)
        if not all(t in state for t in theirs):
            is_head = not ours.startswith(names.ENCODER_PREFIX) and not _is_encoder_only(model)
            pooler = ours.split(".")[-2] == "pooler"
            (report.fresh if is_head or pooler else report.missing).append(ours)
            continue
        used.update(theirs)
        parts = [state[t] for t in theirs]
        tensor = names.fuse_qkv(*parts) if len(parts) == 3 else parts[0]
        if tensor.shape != target.shape:
            report.mismatched.append(
                f"{'/'.join(theirs)}: file {tuple(tensor.shape)}, model {tuple(target.shape)}"
            )
            continue
        with torch.no_grad():
            target.copy_(tensor.to(target.dtype))
    for key in state:
        if key in used or key.endswith(names.IGNORED):
            continue
        bare = key[len(names.ENCODER_PREFIX) :] if key.startswith(names.ENCODER_PREFIX) else key
        (report.unused if bare.startswith(HEAD_PREFIXES) else report.unexpected).append(key)
    _raise_or_warn(report, strict, source)
    return report


def _raise_or_warn(report: LoadReport, strict: bool, source: str) -> None:
    problems = [f"missing: {k}" for k in report.missing] + [f"unexpected: {k}" for k in report.unexpected]
    problems += [f"wrong shape: {k}" for k in report.mismatched]
    if problems and strict:
        listed = "\n  ".join(problems)
        raise CheckpointError(f"{source}: {len(problems)} tensor(s) do not match the model:\n  {listed}")
    for line in problems:
        log.warning("%s: %s", source, line)
    if report.fresh:
        log.warning("%s: initialised fresh (not in the checkpoint): %s", source, ", ".join(report.fresh))
    if report.unused:
        log.info("%s: unused head tensors in the checkpoint: %s", source, ", ".join(report.unused))
