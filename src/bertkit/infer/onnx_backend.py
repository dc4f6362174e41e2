"""An onnxruntime backend with the torch backend's interface: named (B, T) inputs in, named outputs out."""

from __future__ import annotations

import os

import numpy as np
import torch

from bertkit.infer.torch_backend import INPUT_NAMES


class OnnxBackend:
    """Runs an exported :class:`~bertkit.infer.torch_backend.InferenceGraph` on onnxruntime's CPU provider.

    threads: onnxruntime's intra-op thread count (None = its default, one per core).
    """

    name = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("backend='onnx' needs onnxruntime: pip install 'bertkit[onnx]'") from None
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: shape-inference notes on the dynamic axes are expected
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        if self.input_names not in (INPUT_NAMES, tuple(n for n in INPUT_NAMES if n != "token_type_ids")):
            raise ValueError(f"{path}: graph inputs are {self.input_names}, expected {INPUT_NAMES} "
                             "(without token_type_ids for a model that has none); re-export it")
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def run(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feed = {name: np.ascontiguousarray(batch[name].numpy(), dtype=np.int64) for name in self.input_names}
        outputs = self.session.run(list(self.output_names), feed)
        return {name: torch.from_numpy(out) for name, out in zip(self.output_names, outputs, strict=True)}
