"""The inference graph: encoder plus task head in one forward, with the outputs every backend returns.

The torch backend runs this module directly and the ONNX export traces it, so both backends compute the
same thing by construction and the predictor reads the same named outputs from either.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.config import DTYPES, BertConfig
from bertkit.model import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")


def input_names(config: BertConfig) -> tuple[str, ...]:
    """The graph's inputs: all three, or without ``token_type_ids`` for a model that has none (DistilBERT)."""
    return INPUT_NAMES if config.has_token_types else ("input_ids", "attention_mask")


class InferenceGraph(nn.Module):
    """The (B, T) int64 inputs named by ``input_names`` -> a tuple in the order of ``output_names``.

    Outputs: ``last_hidden_state`` (B, T, H) always (embeddings, fill-mask), then the head's:
    ``logits`` (B, C) for sequence heads or (B, T, C) for token heads; ``start_logits`` and ``end_logits``
    (B, T) for span heads. Each head line is the head's own forward minus its loss.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.encoder: BertModel = model if isinstance(model, BertModel) else model.bert
        self.input_names = input_names(self.encoder.config)
        if isinstance(model, (BertForSequenceClassification, BertForTokenClassification)):
            self.output_names: tuple[str, ...] = ("last_hidden_state", "logits")
        elif isinstance(model, BertForQuestionAnswering):
            self.output_names = ("last_hidden_state", "start_logits", "end_logits")
        elif isinstance(model, (BertModel, BertForPreTraining)):
            self.output_names = ("last_hidden_state",)
        else:
            raise TypeError(f"no inference graph for {type(model).__name__}")

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.input_names, inputs, strict=True))
        out = self.encoder(named["input_ids"], named.get("token_type_ids"), named["attention_mask"])
        hidden = out.last_hidden_state
        if isinstance(self.model, BertForSequenceClassification):
            return hidden, self.model.classifier(out.pooler_output)
        if isinstance(self.model, BertForTokenClassification):
            return hidden, self.model.classifier(hidden)
        if isinstance(self.model, BertForQuestionAnswering):
            start, end = self.model.qa(hidden).float().unbind(-1)
            return hidden, start, end
        return (hidden,)


class TorchBackend:
    """Runs the inference graph in eager PyTorch under ``inference_mode``, on ``device`` in ``dtype``.

    The weights themselves are cast to ``dtype`` (not autocast): on a GPU that halves the memory the
    weights take and skips a cast per matmul per call. Outputs stay on the device, so a caller that
    reduces them first (pooling, top-k) copies only what it keeps.
    """

    name = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", dtype: str = "fp32") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this PyTorch build sees no CUDA device")
        self.dtype = DTYPES[dtype]
        self.graph = InferenceGraph(model.to(self.device, self.dtype)).eval()

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.graph.output_names

    def run(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch: the (B, T) int64 inputs by name (extra ones are ignored) -> named outputs, on the device."""
        inputs = (batch[name].to(self.device, non_blocking=True) for name in self.graph.input_names)
        with torch.inference_mode():
            outputs = self.graph(*inputs)
        return dict(zip(self.graph.output_names, outputs, strict=True))
