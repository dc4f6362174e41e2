"""What the server reports on /metrics, through ``prometheus_client``.

The library gives the exposition format, thread-safe counters and histograms, and the standard process
metrics (resident memory, CPU seconds, open files) and Python metrics (garbage collection) that dashboards
expect. Each app has its own registry rather than the library's global one, so two apps in one process
(the tests run several) keep separate counts.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from bertkit.infer.memory import HeapTrimmer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST
DROP_REASONS = ("queue_full", "deadline", "disconnected")


class _HeapTrimCollector(Collector):
    """Reads the trimmer's own counts at scrape time, so the model worker never touches a metric."""

    def __init__(self, trimmer: HeapTrimmer) -> None:
        self.trimmer = trimmer

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("bertkit_heap_trims", "Times freed heap memory was returned to the OS.",
                                  value=self.trimmer.trims)
        yield CounterMetricFamily("bertkit_heap_trim_seconds", "Time the model worker spent returning it.",
                                  value=self.trimmer.seconds)


class ServerMetrics:
    """The server's metrics in one registry: requests, errors, latency, batching, dropped work, process."""

    def __init__(self, trimmer: HeapTrimmer | None = None) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        if trimmer is not None:
            registry.register(_HeapTrimCollector(trimmer))
        self.requests = Counter("bertkit_requests", "HTTP requests by endpoint and status code.",
                                ("endpoint", "status"), registry=registry)
        self.errors = Counter("bertkit_errors", "Requests answered with an error, by endpoint and status.",
                              ("endpoint", "status"), registry=registry)
        self.latency = Histogram("bertkit_request_seconds", "Request latency in seconds, by endpoint.",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("bertkit_batch_size", "Texts per model call (after micro-batching).",
                                    ("endpoint",), buckets=BATCH_BUCKETS, registry=registry)
        self.batch_requests = Histogram("bertkit_batch_requests",
                                        "Requests (or parts of a large one) merged into one model call.",
                                        ("endpoint",), buckets=BATCH_BUCKETS, registry=registry)
        self.dropped = Counter("bertkit_requests_dropped",
                               "Requests whose model work was dropped, by reason: queue_full (refused with 503), "
                               "deadline (504), disconnected (the client hung up first).",
                               ("endpoint", "reason"), registry=registry)
        self.queued = Gauge("bertkit_queued_texts", "Texts queued or running now (the bound is --max-queue).",
                            registry=registry)

    def record_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()

    def record_drop(self, endpoint: str, reason: str) -> None:
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; one of {DROP_REASONS}")
        self.dropped.labels(endpoint, reason).inc()

    def render(self) -> bytes:
        """The exposition text, served with :data:`CONTENT_TYPE`."""
        return generate_latest(self.registry)
