"""What every recipe writes into its run folder besides the loop's own files: loadable models.

Every model the loop saves (checkpoints, the best model, the final one) is a folder that loads on its own: the
weights and config.json in the variant's standard layout, and the tokenizer's files beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from bertkit.tokenizer import Tokenizer


def model_and_tokenizer_writer(
    tokenizer: Tokenizer, part: Callable[[nn.Module], nn.Module] | None = None
) -> Callable[[nn.Module, Path], None]:
    """``save_model`` for the loop: ``part(model)`` (the model itself by default; distillation's student) and the
    tokenizer, written to the folder the loop names."""

    def save(model: nn.Module, path: Path) -> None:
        (part(model) if part is not None else model).save_pretrained(path)
        tokenizer.save_pretrained(path)

    return save
