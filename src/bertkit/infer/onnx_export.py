"""Export a model directory to ONNX, and quantise the exported graph to int8 with onnxruntime.

The graph is :class:`~bertkit.infer.torch_backend.InferenceGraph` (encoder + task head, named outputs), traced by
torch's TorchScript-based exporter with batch and sequence axes left dynamic. It is traced on a padded
example, so the padding-skipping path of :mod:`bertkit.model.unpadding` (gather the real tokens, run the
per-token layers on them, scatter back) is what the graph contains; a batch without padding runs the same
graph with every token selected.

``quantize_onnx`` applies the torch int8 recipe's layer choice (:mod:`bertkit.infer.quantize`) with
onnxruntime's dynamic int8 on the chosen encoder linears only. onnxruntime cannot keep single input
channels exact, so where the recipe keeps some of ``fc2``'s channels in fp32 the whole ``fc2`` stays fp32
here, and smoothing is not applied.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from bertkit.files import atomic_write
from bertkit.infer.quantize import ALL_TARGETS, DEFAULT_RECIPE, Int8Recipe
from bertkit.infer.torch_backend import InferenceGraph
from bertkit.model import BertForSequenceClassification

OPSET = 17
ONNX_FILE = "model.onnx"


def _example_inputs(graph: InferenceGraph) -> tuple[torch.Tensor, ...]:
    """A (2, 8) batch whose second row is padded, so the trace takes the packed path."""
    config = graph.encoder.config
    ids = torch.arange(16).view(2, 8) % config.vocab_size
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = config.pad_token_id
    example = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask}
    return tuple(example[name] for name in graph.input_names)


def export_onnx(model: nn.Module, path: str | os.PathLike) -> Path:
    """Trace ``model`` (a bertkit model in eval mode) to an ONNX file, written atomically.

    Inputs: input_ids, token_type_ids (absent for a model without token types), attention_mask, int64
    (batch, seq). Outputs: those of
    :class:`InferenceGraph`, float32.
    """
    if model.training:
        raise ValueError("export_onnx needs a model in eval mode; call model.eval() first")
    graph = InferenceGraph(model).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {0: "batch", 1: "seq"} for name in (*graph.input_names, *graph.output_names)}
    if isinstance(model, BertForSequenceClassification):
        axes["logits"] = {0: "batch"}  # (B, C): no sequence axis
    def export(tmp: Path) -> None:
        with warnings.catch_warnings():  # the tracer warns about Python-level branches it records as constants
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, _example_inputs(graph), str(tmp),
                              input_names=list(graph.input_names), output_names=list(graph.output_names),
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)

    atomic_write(path, export)
    return path


def _excluded_nodes(model_path: Path, recipe: Int8Recipe) -> list[str]:
    """Linear nodes of the graph the recipe keeps in fp32: other encoder linears, pooler and heads.

    Exported node names carry the module path, e.g. ``/bert/layers.0/ffn/fc2/Gemm``.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    targets = [t for t in recipe.targets if not (t == "fc2" and recipe.fp32_channels > 0)]
    excluded = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        parts = node.name.split("/")
        in_encoder = any(p.startswith("layers.") for p in parts)
        target = next((t for t in ALL_TARGETS if t in parts), None)
        if not in_encoder or target not in targets:
            excluded += [node.name, f"{node.name}_MatMul"]  # onnxruntime rewrites Gemm X as MatMul X_MatMul
    return excluded


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, recipe: Int8Recipe = DEFAULT_RECIPE) -> Path:
    """Dynamic int8 (onnxruntime) of the encoder linears named by ``recipe``; everything else stays fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    atomic_write(dst, lambda tmp: quantize_dynamic(
        src, tmp, weight_type=QuantType.QInt8, per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
        op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=_excluded_nodes(src, recipe)))
    return dst
