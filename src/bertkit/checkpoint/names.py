"""THE one table between bertkit's parameter names and the standard BERT checkpoint names.

Inside, modules use short names (``layers.3.attn.qkv``); at the border, checkpoints use the names of the
original release (``encoder.layer.3.attention.self.query``). ``{}`` stands for the layer number. The
reverse direction is derived by inverting the table, and the one reshaping (Q, K and V stored separately
but computed as one fused matrix) is the pair of functions at the bottom.
"""

from __future__ import annotations

import re

import torch

# Encoder names, relative to the encoder; in a task model both sides carry the prefix "bert.".
ENCODER: dict[str, str] = {
    "embeddings.token.weight": "embeddings.word_embeddings.weight",
    "embeddings.segment.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.position.weight": "embeddings.position_embeddings.weight",
    "embeddings.norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.norm.bias": "embeddings.LayerNorm.bias",
    "layers.{}.attn.out_proj.weight": "encoder.layer.{}.attention.output.dense.weight",
    "layers.{}.attn.out_proj.bias": "encoder.layer.{}.attention.output.dense.bias",
    "layers.{}.norm1.weight": "encoder.layer.{}.attention.output.LayerNorm.weight",
    "layers.{}.norm1.bias": "encoder.layer.{}.attention.output.LayerNorm.bias",
    "layers.{}.ffn.fc1.weight": "encoder.layer.{}.intermediate.dense.weight",
    "layers.{}.ffn.fc1.bias": "encoder.layer.{}.intermediate.dense.bias",
    "layers.{}.ffn.fc2.weight": "encoder.layer.{}.output.dense.weight",
    "layers.{}.ffn.fc2.bias": "encoder.layer.{}.output.dense.bias",
    "layers.{}.norm2.weight": "encoder.layer.{}.output.LayerNorm.weight",
    "layers.{}.norm2.bias": "encoder.layer.{}.output.LayerNorm.bias",
    "pooler.weight": "pooler.dense.weight",
    "pooler.bias": "pooler.dense.bias",
}

# One of ours stands for three of theirs, concatenated along dim 0 in this order.
FUSED: dict[str, tuple[str, ...]] = {
    f"layers.{{}}.attn.qkv.{kind}": tuple(
        f"encoder.layer.{{}}.attention.self.{part}.{kind}" for part in ("query", "key", "value")
    )
    for kind in ("weight", "bias")
}

# Task heads live beside the encoder, unprefixed on both sides.
HEADS: dict[str, str] = {
    "mlm.dense.weight": "cls.predictions.transform.dense.weight",
    "mlm.dense.bias": "cls.predictions.transform.dense.bias",
    "mlm.norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm.norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm.bias": "cls.predictions.bias",
    "nsp.weight": "cls.seq_relationship.weight",
    "nsp.bias": "cls.seq_relationship.bias",
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
    "qa.weight": "qa_outputs.weight",
    "qa.bias": "qa_outputs.bias",
}

ENCODER_PREFIX = "bert."
# Standard keys that carry no information of their own: buffers and the decoder tied to the word embeddings.
IGNORED = ("embeddings.position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
# Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
ALIASES = (
    (re.compile(r"LayerNorm\.gamma$"), "LayerNorm.weight"),
    (re.compile(r"LayerNorm\.beta$"), "LayerNorm.bias"),
)
_LAYER = re.compile(r"\.(\d+)\.")


def _template(name: str) -> tuple[str, str | None]:
    """'layers.3.norm1.weight' -> ('layers.{}.norm1.weight', '3')."""
    m = _LAYER.search(name)
    if m is None:
        return name, None
    return name[: m.start()] + ".{}." + name[m.end() :], m.group(1)


def to_standard(ours: str) -> list[str]:
    """Our parameter name -> the standard name(s) it is stored under (three for a fused QKV)."""
    prefix, rest = (
        (ENCODER_PREFIX, ours[len(ENCODER_PREFIX) :]) if ours.startswith(ENCODER_PREFIX) else ("", ours)
    )
    if not prefix and rest in HEADS:
        return [HEADS[rest]]
    template, layer = _template(rest)
    if template in FUSED:
        return [prefix + n.format(layer) for n in FUSED[template]]
    if template in ENCODER:
        return [prefix + ENCODER[template].format(layer)]
    raise KeyError(f"no standard name for parameter {ours!r}; add it to bertkit/checkpoint/names.py")


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
