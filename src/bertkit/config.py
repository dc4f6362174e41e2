"""BertConfig: the model's shape, stored under the standard ``config.json`` field names.

The field names are those every BERT checkpoint already uses, so a ``config.json`` written by the
original code or by transformers reads straight in, and ours reads back into theirs. Keys we do not
model (``architectures``, ``transformers_version``, task labels …) are kept in ``extra`` and written back
unchanged, so a round trip never loses information.

The BERT family (RoBERTa, DistilBERT, ALBERT) is the same dataclass: ``model_type`` names the variant and
a few fields and properties (``embedding_size``, layer groups, ``position_offset``, ``has_pooler``,
``sentence_task``) say how it differs. DistilBERT's ``config.json`` spells the shared fields its own way
(``dim``, ``n_layers`` …); those names are translated at the border, in both directions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bertkit.variants import MODEL_TYPES, VARIANTS, Variant

HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

# Compute precisions by the names every command and API takes (training autocasts to them, inference casts).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("auto", *DTYPES)  # training's choices: "auto" is bf16 on a GPU that supports it, else fp32

# The label of a position no loss counts (padding, unmasked tokens, a word's later sub-tokens): the value
# cross_entropy skips by default, and the one every BERT library writes into its label tensors.
IGNORE = -100

# name: (layers, hidden, heads). Sizes from the BERT paper and the "well-read students" miniatures.
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


# Fields only a variant with shared layers (ALBERT) may set to other than "no factorisation, no sharing".
ALBERT_FIELDS = ("embedding_size", "num_hidden_groups", "inner_group_num")


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file and key."""


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    model_type: str = "bert"
    embedding_size: int | None = None  # ALBERT's factorised embedding width E; None means hidden_size
    num_hidden_groups: int = 1  # ALBERT: groups of layers whose weights are shared
    inner_group_num: int = 1  # ALBERT: distinct layers inside each group
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            _check_type(f.name, getattr(self, f.name), f.type, source="BertConfig")
        _check_model_type(self.model_type, source="BertConfig")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ConfigError(f"BertConfig: hidden_act={self.hidden_act!r}; expected one of {HIDDEN_ACTS}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"BertConfig: hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"BertConfig: {name} must be positive, got {getattr(self, name)}")
        self._check_variant()

    def _check_variant(self) -> None:
        """Combinations the variant's checkpoint format cannot store are refused here, not at save time."""
        if self.type_vocab_size < 0:
            raise ConfigError(f"BertConfig: type_vocab_size must be >= 0, got {self.type_vocab_size}")
        if self.position_offset >= self.max_position_embeddings:
            raise ConfigError(
                f"BertConfig: {self.model_type} positions start at {self.position_offset} (pad_token_id + 1) "
                f"but max_position_embeddings is {self.max_position_embeddings}"
            )
        if self.variant.shares_layers:
            for name in ALBERT_FIELDS:
                value = getattr(self, name)
                if value is not None and value <= 0:
                    raise ConfigError(f"BertConfig: {name} must be positive, got {value}")
        elif (self.embedding_size not in (None, self.hidden_size) or self.num_hidden_groups != 1
              or self.inner_group_num != 1):
            raise ConfigError(
                f"BertConfig: embedding_size, num_hidden_groups and inner_group_num are ALBERT's; "
                f"model_type {self.model_type!r} needs embedding_size = hidden_size and one group of one layer"
            )
        for name, value in self.variant.fixed_fields.items():
            if getattr(self, name) != value:
                raise ConfigError(
                    f"BertConfig: {self.model_type} has {name} = {value} (its config.json cannot store another), "
                    f"got {getattr(self, name)}"
                )

    @property
    def variant(self) -> Variant:
        """This model type's row of the variant table (:mod:`bertkit.variants`)."""
        return VARIANTS[self.model_type]

    @property
    def embedding_dim(self) -> int:
        """Width of the token/position/type embeddings: ALBERT's E, else the hidden size."""
        return self.embedding_size if self.embedding_size is not None else self.hidden_size

    @property
    def position_offset(self) -> int:
        """First position id of a real token: RoBERTa skips the ids up to its padding index (pad + 1 = 2)."""
        return self.pad_token_id + 1 if self.variant.positions_after_padding else 0

    @property
    def max_sequence_length(self) -> int:
        """Longest input the position table accepts (512 for RoBERTa's 514 positions)."""
        return self.max_position_embeddings - self.position_offset

    @property
    def has_token_types(self) -> bool:
        """Whether the model takes ``token_type_ids``: DistilBERT has no segment table (``type_vocab_size`` 0);
        RoBERTa's single all-zero type still counts as an input."""
        return takes_token_types(self)

    @property
    def has_pooler(self) -> bool:
        """Whether the base model has the [CLS] pooler; DistilBERT's has none."""
        return self.variant.has_pooler

    @property
    def sentence_task(self) -> str | None:
        """The pretraining sentence-level objective: next-sentence (BERT), sentence order (ALBERT), or none."""
        return self.variant.sentence_task

    @property
    def num_distinct_layers(self) -> int:
        """Layers holding their own weights: every layer, except under ALBERT's sharing."""
        if self.variant.shares_layers:
            return self.num_hidden_groups * self.inner_group_num
        return self.num_hidden_layers

    @property
    def layer_schedule(self) -> tuple[int, ...]:
        """Which distinct layer runs at each depth, in order.

        ALBERT splits the ``num_hidden_layers`` steps evenly between the groups and runs all of a group's
        ``inner_group_num`` layers at each step, so it applies ``num_hidden_layers * inner_group_num``
        layers in all. Every other variant runs each layer once.
        """
        if not self.variant.shares_layers:
            return tuple(range(self.num_hidden_layers))
        steps_per_group = self.num_hidden_layers / self.num_hidden_groups
        return tuple(
            int(step / steps_per_group) * self.inner_group_num + inner
            for step in range(self.num_hidden_layers)
            for inner in range(self.inner_group_num)
        )

    def head_dropout(self, task: str) -> float:
        """Dropout before a head's output layer, from the key the variant's config.json uses for it.

        ``task``: ``"sequence"`` (classifier), ``"token"`` (tagger), ``"span"`` (QA) or ``"sentence"``
        (NSP / SOP). Missing keys mean the reference's defaults.
        """
        return self.variant.head_dropout_rate(task, self.extra, self.hidden_dropout_prob)

    @classmethod
    def preset(cls, name: str, arch: str = "bert", **overrides: Any) -> BertConfig:
        """A paper-sized config: ``tiny``, ``mini``, ``small``, ``medium``, ``base`` or ``large``.

        ``arch`` adds the variant's published defaults (``Variant.presets``); DistilBERT keeps half the
        layers of the BERT size it is named after, as distilbert-base (6 layers) does of bert-base.
        """
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        if "model_type" in overrides:
            if arch != "bert" and overrides["model_type"] != arch:
                raise ConfigError(f"preset: arch={arch!r} but model_type={overrides['model_type']!r}")
            arch = overrides.pop("model_type")
        _check_model_type(arch, source="preset")
        layers, hidden, heads = PRESETS[name]
        variant = VARIANTS[arch]
        values: dict[str, Any] = dict(
            num_hidden_layers=max(1, layers // 2) if variant.halves_preset_layers else layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            model_type=arch,
            **variant.presets,
        )
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> BertConfig:
        return dataclasses.replace(self, **changes)

    # --- config.json -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> BertConfig:
        model_type = data.get("model_type", "bert")
        _check_model_type(model_type, source=source)
        variant = VARIANTS[model_type]
        data = _from_file_keys(data, variant, source)
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        values: dict[str, Any] = dict(variant.file_defaults)
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                _check_type(key, value, known[key].type, source=source)
                values[key] = float(value) if known[key].type == "float" else value
            else:
                extra[key] = value
        try:
            return cls(**values, extra=extra)
        except ConfigError as e:
            raise ConfigError(str(e).replace("BertConfig:", f"{source}:", 1)) from None

    def to_dict(self) -> dict[str, Any]:
        """The config.json of this variant, in the key names its reference implementation reads."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        if not self.variant.shares_layers:
            for name in ALBERT_FIELDS:  # validated to mean "no factorisation, no sharing" for the others
                del out[name]
        for name in self.variant.fixed_fields:
            del out[name]
        out = {self.variant.file_keys.get(k, k): v for k, v in out.items()}
        return {**self.extra, **out}

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> BertConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object at the top level")
        return cls.from_dict(data, source=str(path))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _check_model_type(model_type: Any, source: str) -> None:
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{source}: model_type {model_type!r} is not supported; expected one of {MODEL_TYPES}")


def _from_file_keys(data: dict[str, Any], variant: Variant, source: str) -> dict[str, Any]:
    """The variant's key names (DistilBERT's ``dim`` ...) -> ours; a file giving both spellings of one field is
    refused, and so is a value for a field the variant fixes."""
    out = dict(data)
    for ours, theirs in variant.file_keys.items():
        if theirs in out:
            if ours in out and out[ours] != out[theirs]:
                raise ConfigError(f"{source}: {theirs!r} = {out[theirs]!r} but {ours!r} = {out[ours]!r}")
            out[ours] = out.pop(theirs)
    for name, value in variant.fixed_fields.items():
        if out.get(name, value) != value:
            raise ConfigError(f"{source}: {variant.model_type} has {name} = {value}, got {out[name]!r}")
        out[name] = value
    return out


def _check_type(key: str, value: Any, type_name: Any, source: str) -> None:
    """Reject e.g. ``"hidden_size": "768"`` with the key named, instead of failing deep in torch."""
    type_name = getattr(type_name, "__name__", type_name)
    if type_name == "int | None" and value is None:
        return
    type_name = {"int | None": "int"}.get(str(type_name), type_name)
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(str(type_name), True)
    if not ok:
        raise ConfigError(
            f"{source}: key {key!r} should be {type_name}, got {type(value).__name__} {value!r}"
        )


def takes_token_types(config: Any) -> bool:
    """``BertConfig.has_token_types`` for any config with the standard field names, transformers' included
    (which lack the property; DistilBERT's lacks ``type_vocab_size`` altogether)."""
    return getattr(config, "type_vocab_size", 0) > 0
