"""Reading and writing checkpoint directories in the standard layout.

A directory holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``, or a sharded
index of either). Names are translated through :mod:`bertkit.checkpoint.names`, in the layout of the
variant that ``config.json``'s ``model_type`` names; weights of another variant are refused with the
variant found named. Every missing, unexpected or mis-shaped tensor is listed in the error, never
silently dropped. Files are written through a temporary name and renamed, so a failed save leaves the
previous file intact.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from bertkit import files
from bertkit.checkpoint import names
from bertkit.config import BertConfig

log = logging.getLogger("bertkit")
T = TypeVar("T", bound="PretrainedMixin")
M = TypeVar("M", bound=torch.nn.Module)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


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


def load_weights(model: M, directory: Path, *, strict: bool = True,
                 state: dict[str, torch.Tensor] | None = None) -> M:
    """Fill ``model`` with the weights of the checkpoint folder ``directory`` and return it.

    Standard names are mapped to ours with the checks of :func:`load_standard_state`; what was loaded and what
    was left fresh is kept in ``model.load_report``. ``state``: the folder's tensors when already read.
    """
    weights = find_weights(directory)
    state = read_state_dict(weights) if state is None else state
    model.load_report = load_standard_state(model, state, strict, source=str(weights))
    return model


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` for every bertkit model class.

    A class sets nothing but its constructor; the mapping to standard names is derived from its own
    parameter names. Task classes read their label count from ``config.extra`` (``id2label``).
    """

    config: BertConfig
    load_report: LoadReport
    # A sequence classifier: some variants keep its pooler and output layer under head names.
    pooled_classifier = False

    @classmethod
    def from_pretrained(cls: type[T], path: str | os.PathLike, strict: bool = True, **kwargs: Any) -> T:
        directory = Path(path)
        find_weights(directory)  # a missing folder or weight file is named before the config is read
        config = BertConfig.from_json_file(directory / "config.json")
        return load_weights(cls(config, **kwargs), directory, strict=strict)  # type: ignore[call-arg]

    def save_pretrained(self, path: str | os.PathLike) -> None:
        directory = Path(path)
        state = standard_state_dict(self)  # type: ignore[arg-type]
        config = self.config.to_dict()
        config["architectures"] = [standard_architecture(type(self).__name__, self.config)]
        weights = directory / "model.safetensors"
        files.atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        files.write_text(directory / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")


def standard_architecture(class_name: str, config: BertConfig) -> str:
    """The reference's class for one of ours, as config.json's ``architectures`` names it.

    Our classes are named for BERT and serve every variant; the file names the variant's own class
    (``RobertaForSequenceClassification`` ...), so the reference's Auto classes build the right model.
    A pretraining model without a sentence objective is the reference's masked-LM class.
    """
    suffix = class_name.removeprefix("Bert")
    if suffix == "ForPreTraining" and config.sentence_task is None:
        suffix = "ForMaskedLM"
    return config.variant.class_prefix + suffix


def _is_encoder_only(model: torch.nn.Module) -> bool:
    return not any(k.startswith(names.ENCODER_PREFIX) for k in model.state_dict())


def _standard_names(model: torch.nn.Module, ours: str) -> list[str]:
    config: BertConfig = model.config  # type: ignore[assignment]
    return names.to_standard(ours, config, pooled_classifier=getattr(model, "pooled_classifier", False))


def standard_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under standard names, Q/K/V split, ready for safetensors."""
    out: dict[str, torch.Tensor] = {}
    for ours, tensor in model.state_dict().items():
        theirs = _standard_names(model, ours)
        parts = names.split_qkv(tensor) if len(theirs) == 3 else (tensor,)
        for name, part in zip(theirs, parts, strict=True):
            out[name] = part.detach().contiguous().cpu()
    return out


def _normalise_keys(
    state: dict[str, torch.Tensor], encoder_only: bool, layout: names.Layout
) -> dict[str, torch.Tensor]:
    """Bring a file's keys to the model's layout: aliases resolved, the variant's prefix added or removed."""
    out = {}
    for key, tensor in state.items():
        key = names.normalise_standard(key)
        is_head = key.startswith(layout.head_roots)
        if encoder_only and key.startswith(layout.prefix):
            key = key[len(layout.prefix) :]
        elif not encoder_only and not is_head and not key.startswith(layout.prefix):
            key = layout.prefix + key
        out[key] = tensor
    if layout.bias_alias is not None:
        bias, decoder_bias = layout.bias_alias
        if bias not in out and decoder_bias in out:
            out[bias] = out[decoder_bias]
    return out


def _check_variant(config: BertConfig, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights of another variant than config.json says, naming the one found.

    Key names tell every variant apart except an unprefixed RoBERTa encoder from a BERT one; there the
    position table tells: only RoBERTa keeps an all-zero row at the padding index (its positions start
    after it), while every row of a BERT table is a trained position.
    """
    found = names.detect_arch(list(state))
    positions = state.get("embeddings.position_embeddings.weight")
    pad = config.pad_token_id
    if (found is None and config.model_type == "bert" and positions is not None and 0 <= pad < len(positions)
            and not positions[pad].any()):
        found = ("roberta", f"the position table's row {pad}, the padding index, is all zeros")
    if found is not None and found[0] != config.model_type:
        arch, evidence = found
        raise CheckpointError(
            f"{source}: these are {arch} weights ({evidence}) but config.json says model_type "
            f"{config.model_type!r}; set \"model_type\": \"{arch}\" in config.json if the weights are right"
        )


def load_standard_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool, source: str
) -> LoadReport:
    """Copy standard-named tensors into ``model``; raise listing every problem unless ``strict=False``."""
    config: BertConfig = model.config  # type: ignore[assignment]
    layout = names.layout(config)
    _check_variant(config, state, source)
    state = _normalise_keys(state, _is_encoder_only(model), layout)
    report = LoadReport()
    used: set[str] = set()
    own = model.state_dict()
    for ours, target in own.items():
        theirs = _standard_names(model, ours)
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
    heads = (*layout.head_roots, "pooler.")  # a backbone may leave these unused: reported, not an error
    for key in state:
        if key in used or key.endswith(layout.ignored):
            continue
        bare = key[len(layout.prefix) :] if key.startswith(layout.prefix) else key
        (report.unused if bare.startswith(heads) else report.unexpected).append(key)
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
