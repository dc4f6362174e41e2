"""Tiny model directories for the inference tests: one per task family, plus the pretrained encoder.

The heads are freshly initialised (no training): the tests compare the predictor with the model run directly,
which needs a model, not a good one.
"""

from __future__ import annotations

from pathlib import Path

from bertkit import Tokenizer
from bertkit.tasks.families import TaskSpec
from bertkit.tasks.models import build_task_model
from finetune_toys import make_pretrained

SPECS = {
    "classify": TaskSpec("classify", ("neg", "pos"), max_seq_len=24),
    "pair": TaskSpec("pair", ("no", "yes"), max_seq_len=24, pair_column="pair"),
    "regress": TaskSpec("regress", None, max_seq_len=24),
    "tag": TaskSpec("tag", ("O", "B-PER", "I-PER", "B-LOC", "I-LOC"), max_seq_len=24),
    "qa": TaskSpec("qa", None, max_seq_len=32, doc_stride=8, max_query_len=8),
}


def make_model_dirs(root: Path) -> dict[str, Path]:
    """{"pretrained": encoder with MLM head, "<task>": fine-tuned layout for each family}."""
    dirs = {"pretrained": make_pretrained(root / "pretrained")}
    tokenizer = Tokenizer.from_pretrained(dirs["pretrained"])
    for task, spec in SPECS.items():
        model = build_task_model(dirs["pretrained"], spec, seed=1).eval()
        model.save_pretrained(root / task)
        tokenizer.save_pretrained(root / task)
        dirs[task] = root / task
    return dirs
