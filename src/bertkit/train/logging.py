"""Where training metrics go: ``metrics.jsonl`` (always), TensorBoard (when installed), a progress bar.

``metrics.jsonl`` holds one JSON object per line. Training lines carry ``step``, ``epoch``, ``loss``,
``lr``, ``grad_norm``, ``tokens_per_s`` and ``elapsed`` (seconds, continued across resumes).
Evaluation lines are separate objects with ``step``, ``elapsed``, ``duration`` (seconds the evaluation took)
and each metric under an ``eval_`` prefix (``eval_loss``, ``eval_accuracy`` ...), so one file can be read as a
table without a split column.
On resume the file is cut back to the checkpoint's step, so it reads as if the run was never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bertkit.files import write_text

METRICS_FILE = "metrics.jsonl"
NOT_PLOTTED = ("step", "epoch", "elapsed", "duration")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a ``metrics.jsonl`` (a torn last line from a killed run is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records logged after ``last_step`` (atomically: temp file, then replace)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


class MetricsLogger:
    """Appends records to ``out_dir/metrics.jsonl`` and mirrors numbers to TensorBoard.

    A disabled logger (every rank but 0) accepts records and writes nothing. TensorBoard is used only
    if ``torch.utils.tensorboard`` imports (it needs the optional ``tensorboard`` package).
    """

    def __init__(self, out_dir: Path, *, enabled: bool, resume_step: int | None = None) -> None:
        self.path = out_dir / METRICS_FILE
        self._file = None
        self._tb = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = _open_tensorboard(out_dir / "tensorboard", resume_step)

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key not in NOT_PLOTTED and isinstance(value, int | float):
                    self._tb.add_scalar(_tensorboard_tag(key), value, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def _tensorboard_tag(key: str) -> str:
    return "eval/" + key.removeprefix("eval_") if key.startswith("eval_") else "train/" + key


def _open_tensorboard(log_dir: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    # purge_step hides events a killed run wrote after the checkpoint we resume from.
    return SummaryWriter(str(log_dir), purge_step=None if resume_step is None else resume_step + 1)


class Progress:
    """A tqdm bar over optimizer steps showing loss and tokens/s; tqdm supplies the ETA."""

    def __init__(self, total: int | None, initial: int, *, enabled: bool) -> None:
        self._bar = tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)

    def update(self, record: dict[str, Any] | None = None) -> None:
        if record is not None:
            self._bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}",
                                  refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
