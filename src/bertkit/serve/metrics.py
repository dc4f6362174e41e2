"""Counters and histograms rendered in the Prometheus text exposition format (version 0.0.4).

A few dozen lines cover what the server reports, so no client library is needed. Every metric is
thread-safe: the request handlers and the model worker thread update them concurrently.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

from bertkit.infer.memory import HeapTrimmer, resident_bytes

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Counter:
    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            for labels, value in sorted(self._values.items()):
                lines.append(f"{self.name}{_labels(self.label_names, labels)} {value:g}")
        return lines


class Histogram:
    """Cumulative buckets (``le``), plus ``_sum`` and ``_count``, per label combination."""

    def __init__(self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}  # counts per bucket, [sum]
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            counts, total = self._series.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            total[0] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for labels, (counts, total) in sorted(self._series.items()):
                cumulative = 0
                for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                    cumulative += count
                    le = 'le="+Inf"' if bound == float("inf") else f'le="{bound:g}"'
                    lines.append(f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative}")
                lines.append(f"{self.name}_sum{_labels(self.label_names, labels)} {total[0]:g}")
                lines.append(f"{self.name}_count{_labels(self.label_names, labels)} {cumulative}")
        return lines


class ServerMetrics:
    """What the server reports on /metrics."""

    def __init__(self, trimmer: HeapTrimmer | None = None) -> None:
        self.trimmer = trimmer
        self.requests = Counter("bertkit_requests_total", "HTTP requests by endpoint and status code.",
                                ("endpoint", "status"))
        self.errors = Counter("bertkit_errors_total", "Requests answered with an error, by endpoint and status.",
                              ("endpoint", "status"))
        self.latency = Histogram("bertkit_request_seconds", "Request latency in seconds, by endpoint.",
                                 LATENCY_BUCKETS, ("endpoint",))
        self.batch_size = Histogram("bertkit_batch_size", "Texts per model call (after micro-batching).",
                                    BATCH_BUCKETS, ("endpoint",))
        self.batch_requests = Histogram("bertkit_batch_requests", "Requests merged into one model call.",
                                        BATCH_BUCKETS, ("endpoint",))

    def record_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.inc(endpoint, str(status))
        self.latency.observe(seconds, endpoint)
        if status >= 400:
            self.errors.inc(endpoint, str(status))

    def render(self) -> str:
        metrics = (self.requests, self.errors, self.latency, self.batch_size, self.batch_requests)
        lines = [line for m in metrics for line in m.render()]
        lines += ["# HELP process_resident_memory_bytes Resident memory size in bytes.",
                  "# TYPE process_resident_memory_bytes gauge",
                  f"process_resident_memory_bytes {resident_bytes()}"]
        if self.trimmer is not None:
            lines += ["# HELP bertkit_heap_trims_total Times freed heap memory was returned to the OS.",
                      "# TYPE bertkit_heap_trims_total counter",
                      f"bertkit_heap_trims_total {self.trimmer.trims}",
                      "# HELP bertkit_heap_trim_seconds_total Time the model worker spent returning it.",
                      "# TYPE bertkit_heap_trim_seconds_total counter",
                      f"bertkit_heap_trim_seconds_total {self.trimmer.seconds:g}"]
        return "\n".join(lines) + "\n"
