"""Fine-tuned task models: a pretrained encoder under a task head, loaded back with its tokenizer and task spec.

Fine-tuning builds these (``build_task_model``), and the Predictor, evaluation and prediction load them
(``load_task_model``); it lives here, beside the task families, so that loading a model for inference never
imports the training loop. ``run_on_features`` runs any task model over encoded features in length-sorted batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bertkit.checkpoint.io import load_weights
from bertkit.config import BertConfig, takes_token_types
from bertkit.model import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
from bertkit.tasks.batches import sorted_batches
from bertkit.tasks.families import TaskSpec
from bertkit.tokenizer import Tokenizer

TASK_KEYS = ("bertkit", "id2label", "label2id", "problem_type", "num_labels")  # a checkpoint's previous task
HEADS = {cls.__name__: cls for cls in (BertForSequenceClassification, BertForTokenClassification,
                                       BertForQuestionAnswering)}


@dataclass
class TaskModel:
    """A fine-tuned model with what it needs to read and decode data: its tokenizer and task spec."""

    model: nn.Module
    tokenizer: Tokenizer
    spec: TaskSpec

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self.spec.labels


def load_task_model(path: str | os.PathLike, task: str | None = None, device: str | None = None) -> TaskModel:
    """Load a fine-tuned model directory (ours, or a standard task checkpoint of any variant) in eval mode.

    Args:
        task: the family the caller's data is for; a model fine-tuned for another raises naming both.
    """
    directory = Path(path)
    config = BertConfig.from_json_file(directory / "config.json")
    spec = TaskSpec.from_config(config.extra, str(directory))
    if task is not None and task != spec.task:
        raise ValueError(f"{directory} was fine-tuned for task {spec.task!r}; it cannot be used for task {task!r}")
    model = HEADS[spec.architecture].from_pretrained(directory).eval()
    if device is not None:
        model.to(device)
    return TaskModel(model, Tokenizer.from_pretrained(directory), spec)


def build_task_model(
    pretrained: str | os.PathLike, spec: TaskSpec, *, dropout: float = 0.1, seed: int = 0
) -> nn.Module:
    """A pretrained encoder under a fresh head for `spec`, the task written into its config.

    The head's initial weights are drawn from `seed`. Head tensors already in the checkpoint are kept when their
    shapes fit (continuing from a model fine-tuned on a related task).
    """
    directory = Path(pretrained)
    config = BertConfig.from_json_file(directory / "config.json")
    if spec.max_seq_len > config.max_sequence_length:
        raise ValueError(f"max_seq_len {spec.max_seq_len} exceeds the {config.max_sequence_length} tokens the "
                         f"{config.model_type} model accepts ({directory / 'config.json'})")
    extra = {k: v for k, v in config.extra.items() if k not in TASK_KEYS}
    config = config.replace(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                            extra={**extra, **spec.config_entries()})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HEADS[spec.architecture](config)
    return load_weights(model, directory)


@torch.no_grad()
def run_on_features(
    model: nn.Module, features: Sequence, *, batch_size: int = 64, pad_id: int = 0
) -> tuple[list[np.ndarray], float | None]:
    """Run `model` over features, longest first, and put the outputs back in feature order.

    Works with any model whose output has `.logits` or `.start_logits` / `.end_logits` (and `.loss` when the
    features carry targets). Returns per feature (num_labels,) for sequence heads, (T, num_labels) for token
    heads or (T, 2) start / end logits for span heads (T = the feature's length), and the mean loss or None.
    """
    device = next(model.parameters()).device
    outputs: list[np.ndarray] = [np.empty(0)] * len(features)
    loss_sum, counted = 0.0, 0
    for indices, batch in sorted_batches(features, batch_size, pad_id, takes_token_types(model.config)):
        out = model(**{k: v.to(device) for k, v in batch.items()})
        if getattr(out, "loss", None) is not None:
            loss_sum, counted = loss_sum + float(out.loss) * len(indices), counted + len(indices)
        if hasattr(out, "start_logits"):
            rows = torch.stack([out.start_logits, out.end_logits], dim=-1)  # (B, T, 2)
        else:
            rows = out.logits  # (B, C) or (B, T, C)
        rows = rows.float().cpu().numpy()
        for i, row in zip(indices, rows, strict=True):
            outputs[i] = row if row.ndim == 1 else row[: len(features[i].input_ids)]
    return outputs, (loss_sum / counted if counted else None)
