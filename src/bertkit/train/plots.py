"""PNG plots of a run's ``metrics.jsonl``: training loss, learning rate, and the evaluation metrics.

matplotlib is an optional dependency (the ``plots`` extra); it is imported only when a plot is drawn, and its
absence is a :class:`PlotsUnavailable` error that callers can turn into a warning. Figures are drawn on the Agg
canvas without pyplot, so plotting keeps no global state and needs no display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Evaluation metrics drawn, each in its own panel, in this order when present.
EVAL_PANELS = (
    ("eval_mlm_accuracy", "MLM accuracy (masked tokens)"),
    ("eval_nsp_accuracy", "NSP accuracy"),
    ("eval_perplexity", "MLM perplexity"),
)


class PlotsUnavailable(ImportError):
    """matplotlib is not installed."""


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotsUnavailable("matplotlib is not installed, so no plots were drawn; "
                               "install it with: pip install 'bertkit[plots]'") from None
    return Figure


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    return [s for s, _ in points], [v for _, v in points]


def _save(figure: Any, path: Path) -> Path:
    """Write atomically, so a reader (or a crash) never sees half a PNG."""
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_metrics(records: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``loss.png`` (training and evaluation loss), ``lr.png`` and ``eval.png`` from metrics records.

    Args:
        records: ``metrics.jsonl`` objects (``train.logging.read_metrics``); each has ``step``.
        out_dir: folder for the PNGs (created).

    Returns:
        the paths written; a plot without data (e.g. no evaluation) is skipped.

    Raises:
        PlotsUnavailable: matplotlib is missing.
    """
    figure_class = _figure_class()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    steps, loss = _series(records, "loss")
    eval_steps, eval_loss = _series(records, "eval_loss")
    if steps or eval_steps:
        fig = figure_class(figsize=(6.4, 4.0))
        ax = fig.add_subplot()
        ax.plot(steps, loss, label="training loss (MLM + NSP)")
        if eval_steps:
            ax.plot(eval_steps, eval_loss, "o-", label="held-out loss")
        ax.set(xlabel="step", ylabel="loss", title="Pretraining loss")
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / "loss.png"))
    lr_steps, lr = _series(records, "lr")
    if lr_steps:
        fig = figure_class(figsize=(6.4, 3.2))
        ax = fig.add_subplot()
        ax.plot(lr_steps, lr)
        ax.set(xlabel="step", ylabel="learning rate", title="Learning-rate schedule")
        ax.grid(alpha=0.3)
        written.append(_save(fig, out / "lr.png"))
    panels = [(key, title) for key, title in EVAL_PANELS if _series(records, key)[0]]
    if panels:
        fig = figure_class(figsize=(4.0 * len(panels), 3.4))
        for i, (key, title) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            ax.plot(*_series(records, key), "o-")
            ax.set(xlabel="step", title=title)
            ax.grid(alpha=0.3)
        written.append(_save(fig, out / "eval.png"))
    return written
