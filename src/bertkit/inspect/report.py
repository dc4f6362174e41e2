"""A training run as one page: ``report.html`` plus PNG plots, written into the run folder.

Inputs, both written by training:

* ``metrics.jsonl`` (see :mod:`bertkit.train.logging`): training lines with ``step``, ``loss``, ``lr``,
  ``tokens_per_s``, ``elapsed``; evaluation lines with ``step`` and ``eval_*`` keys. The report can be
  built while the run is still going: it shows the lines written so far, and a last line cut mid-write
  is skipped.
* ``eval_details.json`` (optional, fine-tuning) with either or both of::

      {"step": 1200,                                   # optional: the step these details describe
       "labels": ["negative", "positive"],             # class names, in label-id order
       "confusion_matrix": [[412, 16], [21, 423]],     # rows = gold label, columns = predicted label
       "per_entity": {"PER": {"precision": 0.95, "recall": 0.96, "f1": 0.955, "support": 1842}}}

  ``support`` is optional. The report draws a confusion matrix for the first and per-entity F1 bars for
  the second.

The HTML embeds every plot as a base64 PNG, so the page opens offline and can be mailed as one file.
matplotlib (the optional ``plots`` extra) is imported only here, through the object API (no pyplot state).
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.files import atomic_write
from bertkit.train.logging import METRICS_FILE, read_metrics

REPORT_FILE = "report.html"
DETAILS_FILE = "eval_details.json"
ENTITY_SCORES = ("precision", "recall", "f1")


@dataclass
class Plot:
    title: str
    file: str  # PNG name inside the run folder
    caption: str


def _figure(width: float = 7.0, height: float = 3.4):
    """A matplotlib Figure without pyplot, or a clear error when the optional dependency is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the training report needs matplotlib: pip install 'bertkit[plots]'") from None
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def load_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training lines, evaluation lines) of a run folder's ``metrics.jsonl``, in file order."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    path = run / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no {METRICS_FILE} (a run writes it at its first logging step)")
    records = [r for r in read_metrics(path) if isinstance(r, dict) and isinstance(r.get("step"), int)]
    if not records:
        raise ValueError(f"{path}: no complete metric lines yet")
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    return train, evals


def load_details(run_dir: str | Path) -> dict[str, Any] | None:
    """The validated ``eval_details.json`` of a run, or None when the run has none."""
    path = Path(run_dir) / DETAILS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    if "confusion_matrix" in data:
        _check_confusion(path, data)
    if "per_entity" in data:
        _check_entities(path, data["per_entity"])
    return data


def _check_confusion(path: Path, data: dict[str, Any]) -> None:
    matrix, labels = data["confusion_matrix"], data.get("labels")
    square = isinstance(matrix, list) and matrix and all(isinstance(r, list) and len(r) == len(matrix) for r in matrix)
    if not square or not all(isinstance(v, int | float) for r in matrix for v in r):
        raise ValueError(f"{path}: 'confusion_matrix' must be a square list of lists of counts")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(matrix)):
        raise ValueError(f"{path}: 'labels' must be a list of {len(matrix)} names, one per matrix row")


def _check_entities(path: Path, entities: Any) -> None:
    if not isinstance(entities, dict) or not entities:
        raise ValueError(f"{path}: 'per_entity' must be a non-empty object of entity type -> scores")
    for name, scores in entities.items():
        if not isinstance(scores, dict) or not all(isinstance(scores.get(k), int | float) for k in ENTITY_SCORES):
            raise ValueError(f"{path}: per_entity[{name!r}] needs numeric 'precision', 'recall' and 'f1'")


def write_report(run_dir: str | Path) -> Path | None:
    """:func:`build_report` at the end of a training run: without matplotlib, a warning instead of an error."""
    try:
        return build_report(run_dir)
    except ImportError as err:
        logging.getLogger("bertkit").warning("%s", err)
        return None


def build_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and its PNG plots into ``run_dir``; return the HTML path.

    Shows whatever exists: loss, learning rate and tokens/s from training lines, each ``eval_*`` metric
    by step, and a confusion matrix or per-entity F1 from ``eval_details.json``.
    """
    run = Path(run_dir)
    train, evals = load_run(run)
    details = load_details(run)
    plots = []
    if train:
        plots += [_plot_loss(run, train, evals), _plot_series(run, train, "lr", "Learning rate", "lr.png"),
                  _plot_series(run, train, "tokens_per_s", "Throughput (tokens/s)", "tokens_per_s.png")]
    eval_keys = sorted({k for r in evals for k in r if k.startswith("eval_") and k != "eval_loss"})
    if eval_keys:
        plots.append(_plot_eval(run, evals, eval_keys))
    if details and "confusion_matrix" in details:
        plots.append(_plot_confusion(run, details))
    if details and "per_entity" in details:
        plots.append(_plot_entities(run, details["per_entity"]))
    page = _render(run, train, evals, [p for p in plots if p is not None])
    path = run / REPORT_FILE
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return path


def _values(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the records holding a finite number under ``key``."""
    pairs = [(r["step"], float(r[key])) for r in records
             if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    steps, values = zip(*pairs, strict=True) if pairs else ((), ())
    return np.asarray(steps), np.asarray(values)


def _save(fig, run: Path, name: str) -> None:
    atomic_write(run / name, lambda tmp: fig.savefig(tmp, format="png"))


def _smooth(values: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average, so a noisy loss curve shows its trend."""
    alpha, out, acc = 2.0 / (span + 1), np.empty_like(values), values[0]
    for i, v in enumerate(values):
        acc = alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def _plot_loss(run: Path, train: list[dict], evals: list[dict]) -> Plot | None:
    steps, loss = _values(train, "loss")
    eval_steps, eval_loss = _values(evals, "eval_loss")
    if not len(steps) and not len(eval_steps):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    if len(steps):
        smooth = len(steps) >= 20
        ax.plot(steps, loss, color="#8fb5e3" if smooth else "#1f5fa8", lw=1, label="training loss")
        if smooth:
            ax.plot(steps, _smooth(loss, max(5, len(steps) // 20)), color="#1f5fa8", lw=2, label="training (smoothed)")
    if len(eval_steps):
        ax.plot(eval_steps, eval_loss, "o-", color="#b5541c", lw=1.5, ms=4, label="evaluation loss")
    _style(ax, "step", "loss")
    ax.legend(frameon=False)
    _save(fig, run, "loss.png")
    return Plot("Loss", "loss.png", "Training loss per logging window (mean over its steps) and evaluation loss.")


def _plot_series(run: Path, train: list[dict], key: str, label: str, file: str) -> Plot | None:
    steps, values = _values(train, key)
    if not len(steps):
        return None
    fig = _figure(7.0, 2.8)
    ax = fig.add_subplot()
    ax.plot(steps, values, color="#0b6e4f", lw=1.5)
    _style(ax, "step", label)
    _save(fig, run, file)
    return Plot(label, file, f"{label} at each logging step.")


def _plot_eval(run: Path, evals: list[dict], keys: list[str]) -> Plot:
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = _figure(3.3 * cols, 2.7 * rows)
    for n, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, n + 1)
        steps, values = _values(evals, key)
        ax.plot(steps, values, "o-", color="#b5541c", lw=1.5, ms=4)
        _style(ax, "step", key.removeprefix("eval_"))
    _save(fig, run, "eval_metrics.png")
    return Plot("Evaluation metrics", "eval_metrics.png", "Each evaluation metric at the steps it was measured.")


def _plot_confusion(run: Path, details: dict[str, Any]) -> Plot:
    counts = np.asarray(details["confusion_matrix"], dtype=float)
    labels = [str(x) for x in details.get("labels") or range(len(counts))]
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # colour by share of each gold row
    size = 2.5 + 0.55 * len(labels)
    fig = _figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= 20:
        for (i, j), n in np.ndenumerate(counts):
            colour = "white" if rates[i, j] > 0.6 else "black"
            ax.text(j, i, f"{n:g}", ha="center", va="center", fontsize=9, color=colour)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    fig.colorbar(image, ax=ax, label="share of gold row")
    _save(fig, run, "confusion_matrix.png")
    return Plot("Confusion matrix", "confusion_matrix.png", _details_caption(details, "Counts of gold label (rows) "
                "against prediction (columns); colour is the share of each row."))


def _plot_entities(run: Path, entities: dict[str, dict[str, float]]) -> Plot:
    names = sorted(entities)
    y = np.arange(len(names))
    fig = _figure(7.0, 1.2 + 0.55 * len(names))
    ax = fig.add_subplot()
    for k, (score, colour) in enumerate(zip(ENTITY_SCORES, ("#8fb5e3", "#9fd3b8", "#b5541c"), strict=True)):
        ax.barh(y + (k - 1) * 0.26, [entities[n][score] for n in names], height=0.26, color=colour, label=score)
    ax.set_yticks(y, [f"{n} ({entities[n]['support']})" if "support" in entities[n] else n for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    _style(ax, "score", "")
    ax.legend(frameon=False, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    _save(fig, run, "entity_f1.png")
    return Plot("Per-entity scores", "entity_f1.png", "Precision, recall and F1 for each entity type "
                "(support in brackets when known).")


def _details_caption(details: dict[str, Any], text: str) -> str:
    return f"{text} From {DETAILS_FILE}" + (f", step {details['step']}." if "step" in details else ".")


def _style(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


REPORT_STYLE = """
body { margin: 0; background: #f5f7fa; color: #1d2430; font: 15px/1.5 system-ui, "DejaVu Sans", sans-serif; }
header { background: #17212f; color: #fff; padding: 18px 32px; } header h1 { margin: 0; font-size: 21px; }
header p { margin: 4px 0 0; color: #b8c3d3; } main { max-width: 1000px; margin: 0 auto; padding: 12px 24px 40px; }
section { background: #fff; border: 1px solid #e3e7ee; border-radius: 10px; padding: 14px 20px; margin: 16px 0; }
h2 { font-size: 17px; margin: 0 0 8px; } img { max-width: 100%; } .caption, .empty { color: #5d6778; font-size: 13px; }
table { border-collapse: collapse; font-size: 14px; } td, th { padding: 3px 14px 3px 0; text-align: left; }
td.num { font-variant-numeric: tabular-nums; }
"""


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return html.escape(str(value))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _model_row(run: Path) -> list[tuple[str, str]]:
    """The architecture of the model saved in the run folder (config.json), when there is one."""
    path = run / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(config, dict):
        return []
    names = config.get("architectures")
    architecture = names[0] if isinstance(names, list) and names else "?"
    return [("model", html.escape(f"{config.get('model_type', 'bert')} ({architecture})"))]


def _summary_rows(run: Path, train: list[dict], evals: list[dict]) -> list[tuple[str, str]]:
    rows = _model_row(run)
    if train:
        last = train[-1]
        rows += [("last logged step", _number(last["step"]))]
        rows += [(f"last {k}", _number(last[k])) for k in ("loss", "lr", "tokens_per_s") if k in last]
    last_any = max(train + evals, key=lambda r: r["step"])
    if isinstance(last_any.get("elapsed"), int | float):
        rows.append(("elapsed (h:mm:ss)", _duration(last_any["elapsed"])))
    rows.append(("lines", f"{len(train)} training, {len(evals)} evaluation"))
    if evals:
        rows.append(("last evaluation", f"step {evals[-1]['step']}"))
        rows += [(k, _number(v)) for k, v in evals[-1].items() if k.startswith("eval_")]
    return rows


def _image(run: Path, plot: Plot) -> str:
    data = base64.b64encode((run / plot.file).read_bytes()).decode("ascii")
    return (f"<section><h2>{html.escape(plot.title)}</h2><img alt=\"{html.escape(plot.title)}\" "
            f"src=\"data:image/png;base64,{data}\"><p class=\"caption\">{html.escape(plot.caption)} "
            f"({html.escape(plot.file)})</p></section>")


def _render(run: Path, train: list[dict], evals: list[dict], plots: list[Plot]) -> str:
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    summary = _summary_rows(run, train, evals)
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td class=\"num\">{v}</td></tr>" for k, v in summary)
    missing = [] if train else ["<p class=\"empty\">No training lines yet.</p>"]
    if not evals:
        missing.append("<p class=\"empty\">No evaluation lines yet.</p>")
    body = "".join(_image(run, p) for p in plots)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Training report: {html.escape(run.resolve().name)}</title><style>{REPORT_STYLE}</style></head><body>"
        f"<header><h1>Training report: {html.escape(run.resolve().name)}</h1>"
        f"<p>{html.escape(str(run))} &middot; read {now}; a run still in progress shows the lines written so far</p>"
        f"</header><main><section><h2>Summary</h2><table>{rows}</table>{''.join(missing)}</section>{body}</main>"
        "</body></html>\n"
    )
