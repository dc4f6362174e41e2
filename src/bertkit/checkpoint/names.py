"""THE one table between bertkit's parameter names and the standard checkpoint names of each variant.

Inside, modules use short names (``layers.3.attn.qkv``); at the border, checkpoints use the names of the
original releases (``encoder.layer.3.attention.self.query`` for BERT, ``transformer.layer.3.attention.q_lin``
for DistilBERT …). Every variant has the same modules, so one :class:`Layout` per variant fills in the same
slots: how it spells the embeddings, a layer, each part of a layer, the pooler and the heads. ``{}`` stands
for the layer's path; ALBERT's shared layers are numbered by group and position in the group. The one
reshaping (Q, K and V stored separately but computed as one fused matrix) is the pair of functions at the
bottom.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from bertkit.config import BertConfig

# The attribute holding the encoder inside every task model; each variant has its own standard prefix.
ENCODER_PREFIX = "bert."


@dataclass(frozen=True)
class Layout:
    """One variant's standard names. Ours are relative to the encoder (``embeddings.norm.weight``) or
    to the task model (``mlm.bias``); theirs for the encoder get ``prefix`` inside a task model."""

    prefix: str  # "roberta." …
    embeddings: dict[str, str]  # our embeddings submodule -> theirs
    layer: str  # the path of layer ``{}`` (the layer number, or for ALBERT "{group}.albert_layers.{inner}")
    layer_parts: dict[str, str]  # our submodule of a layer -> theirs, relative to the layer's path
    qkv: tuple[str, str, str]  # the three projections our fused ``attn.qkv`` stands for
    pooler: str | None  # the encoder's pooler, None where the variant's base model has none
    heads: dict[str, str]  # our head module -> theirs (unprefixed: heads sit beside the encoder)
    head_pooler: str | None = None  # where a sequence classifier keeps its dense layer, if not in the encoder
    ignored: tuple[str, ...] = ()  # keys that carry nothing: buffers and decoders tied to the embeddings
    bias_alias: tuple[str, str] | None = None  # (MLM bias, the decoder bias older files store it under)

    @property
    def head_roots(self) -> tuple[str, ...]:
        """First name component of every head key ("cls.", "lm_head." …), to tell heads from encoder keys."""
        names = [*self.heads.values(), *self.ignored, *([self.head_pooler] if self.head_pooler else [])]
        return tuple(sorted({n.split(".")[0] + "." for n in names} - {"embeddings."}))


_BERT_LAYER = {
    "attn.out_proj": "attention.output.dense",
    "norm1": "attention.output.LayerNorm",
    "ffn.fc1": "intermediate.dense",
    "ffn.fc2": "output.dense",
    "norm2": "output.LayerNorm",
}
_BERT_EMBEDDINGS = {
    "token": "embeddings.word_embeddings",
    "segment": "embeddings.token_type_embeddings",
    "position": "embeddings.position_embeddings",
    "norm": "embeddings.LayerNorm",
}
_TASKS = {"classifier": "classifier", "qa": "qa_outputs"}

LAYOUTS: dict[str, Layout] = {
    "bert": Layout(
        prefix="bert.",
        embeddings=_BERT_EMBEDDINGS,
        layer="encoder.layer.{}",
        layer_parts=_BERT_LAYER,
        qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
        pooler="pooler.dense",
        heads={
            "mlm.dense": "cls.predictions.transform.dense",
            "mlm.norm": "cls.predictions.transform.LayerNorm",
            "mlm.bias": "cls.predictions.bias",
            "nsp": "cls.seq_relationship",
            **_TASKS,
        },
        ignored=("embeddings.position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"),
        bias_alias=("cls.predictions.bias", "cls.predictions.decoder.bias"),
    ),
    "roberta": Layout(
        prefix="roberta.",
        embeddings=_BERT_EMBEDDINGS,
        layer="encoder.layer.{}",
        layer_parts=_BERT_LAYER,
        qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
        pooler="pooler.dense",
        heads={
            "mlm.dense": "lm_head.dense",
            "mlm.norm": "lm_head.layer_norm",
            "mlm.bias": "lm_head.bias",
            "classifier": "classifier",  # the tagger's; the sequence classifier's is below
            "qa": "qa_outputs",
        },
        head_pooler="classifier.dense",
        ignored=("embeddings.position_ids", "lm_head.decoder.weight", "lm_head.decoder.bias"),
        bias_alias=("lm_head.bias", "lm_head.decoder.bias"),
    ),
    "distilbert": Layout(
        prefix="distilbert.",
        embeddings={k: v for k, v in _BERT_EMBEDDINGS.items() if k != "segment"},
        layer="transformer.layer.{}",
        layer_parts={
            "attn.out_proj": "attention.out_lin",
            "norm1": "sa_layer_norm",
            "ffn.fc1": "ffn.lin1",
            "ffn.fc2": "ffn.lin2",
            "norm2": "output_layer_norm",
        },
        qkv=("attention.q_lin", "attention.k_lin", "attention.v_lin"),
        pooler=None,
        heads={
            "mlm.dense": "vocab_transform",
            "mlm.norm": "vocab_layer_norm",
            "mlm.bias": "vocab_projector.bias",
            **_TASKS,
        },
        head_pooler="pre_classifier",
        ignored=("embeddings.position_ids", "vocab_projector.weight"),
    ),
    "albert": Layout(
        prefix="albert.",
        embeddings={**_BERT_EMBEDDINGS, "project": "encoder.embedding_hidden_mapping_in"},
        layer="encoder.albert_layer_groups.{}",
        layer_parts={
            "attn.out_proj": "attention.dense",
            "norm1": "attention.LayerNorm",
            "ffn.fc1": "ffn",
            "ffn.fc2": "ffn_output",
            "norm2": "full_layer_layer_norm",
        },
        qkv=("attention.query", "attention.key", "attention.value"),
        pooler="pooler",
        heads={
            "mlm.dense": "predictions.dense",
            "mlm.norm": "predictions.LayerNorm",
            "mlm.bias": "predictions.bias",
            "nsp": "sop_classifier.classifier",
            **_TASKS,
        },
        ignored=("embeddings.position_ids", "predictions.decoder.weight", "predictions.decoder.bias"),
        bias_alias=("predictions.bias", "predictions.decoder.bias"),
    ),
}

# Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
ALIASES = (
    (re.compile(r"LayerNorm\.gamma$"), "LayerNorm.weight"),
    (re.compile(r"LayerNorm\.beta$"), "LayerNorm.bias"),
)
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
# Keys that can only come from one variant's encoder, for files without a task-model prefix.
_SIGNATURES = (("transformer.layer.", "distilbert"), ("encoder.albert_layer_groups.", "albert"))


def layout(config: BertConfig) -> Layout:
    return LAYOUTS[config.model_type]


def to_standard(ours: str, config: BertConfig, pooled_classifier: bool = False) -> list[str]:
    """Our parameter name -> the standard name(s) it is stored under (three for a fused QKV).

    ``pooled_classifier``: the name belongs to a sequence classifier, whose pooler some variants keep
    in the head (RoBERTa's ``classifier.dense``, DistilBERT's ``pre_classifier``) and whose output
    layer RoBERTa calls ``classifier.out_proj``.
    """
    table = layout(config)
    in_task_model = ours.startswith(ENCODER_PREFIX)
    rest = ours[len(ENCODER_PREFIX) :] if in_task_model else ours
    prefix = table.prefix if in_task_model else ""
    module, _, kind = rest.rpartition(".")
    if not in_task_model and rest in table.heads:  # a bare parameter, e.g. the MLM bias
        return [table.heads[rest]]
    if not in_task_model and module in table.heads:
        if pooled_classifier and table.head_pooler == "classifier.dense" and module == "classifier":
            return ["classifier.out_proj." + kind]
        return [f"{table.heads[module]}.{kind}"]
    if module == "pooler":
        if table.head_pooler is not None and (pooled_classifier or table.pooler is None):
            return [f"{table.head_pooler}.{kind}"]
        if table.pooler is not None:
            return [f"{prefix}{table.pooler}.{kind}"]
    if module.startswith("embeddings.") and module[len("embeddings.") :] in table.embeddings:
        return [f"{prefix}{table.embeddings[module[len('embeddings.'):]]}.{kind}"]
    m = _LAYER.match(module)
    if m is not None:
        path = table.layer.format(_layer_path(int(m.group(1)), config))
        part = m.group(2)
        if part == "attn.qkv":
            return [f"{prefix}{path}.{p}.{kind}" for p in table.qkv]
        if part in table.layer_parts:
            return [f"{prefix}{path}.{table.layer_parts[part]}.{kind}"]
    raise KeyError(
        f"no standard {config.model_type} name for parameter {ours!r}; add it to bertkit/checkpoint/names.py"
    )


def _layer_path(index: int, config: BertConfig) -> str:
    """Our flat layer index -> its number in the variant's layout (ALBERT: group, then place in group)."""
    if config.variant.shares_layers:
        group, inner = divmod(index, config.inner_group_num)
        return f"{group}.albert_layers.{inner}"
    return str(index)


def detect_arch(keys: list[str]) -> tuple[str, str] | None:
    """(variant, the evidence) read from a file's key names, or None where they fit several variants.

    A task-model prefix (``roberta.`` …) names the variant; without one, DistilBERT's and ALBERT's layer
    names are their own, while BERT's and RoBERTa's encoders are spelled alike.
    """
    for arch, table in LAYOUTS.items():
        hit = next((k for k in keys if k.startswith(table.prefix)), None)
        if hit is not None:
            return arch, f"keys start with {table.prefix!r}, e.g. {hit!r}"
    for signature, arch in _SIGNATURES:
        hit = next((k for k in keys if k.startswith(signature)), None)
        if hit is not None:
            return arch, f"keys such as {hit!r}"
    return None


def normalise_standard(name: str) -> str:
    """Apply the historical aliases so every checkpoint speaks today's standard names."""
    for pattern, replacement in ALIASES:
        name = pattern.sub(replacement, name)
    return name


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Three (H, H) / (H,) tensors -> one (3H, H) / (3H,) tensor."""
    return torch.cat([q, k, v], dim=0)


def split_qkv(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`fuse_qkv`; clones so each part is saved as its own contiguous tensor."""
    return tuple(t.clone() for t in qkv.chunk(3, dim=0))  # type: ignore[return-value]
