"""Micro-batching: requests that arrive close together share one model call, run by a single worker thread.

A model forward over 16 texts costs far less than 16 forwards of one text, so under concurrent load the
worker takes the oldest waiting job, then keeps gathering jobs of the same kind (same endpoint and options)
until it holds ``max_batch`` texts or ``max_wait_ms`` has passed, runs them as one call and hands each job
its slice of the results. One worker thread owns the model: no locking inside it, and CPU threads are not
oversubscribed by parallel forwards. Jobs of another kind met while gathering wait for the next round.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("bertkit")

RunBatch = Callable[[Hashable, list[Any]], Sequence[Any]]  # (kind, items) -> one result per item


@dataclass
class Job:
    kind: Hashable  # jobs merge only with jobs of the same kind, e.g. ("embed", "mean", False)
    items: list[Any]
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Runs ``run_batch(kind, items)`` on one worker thread over merged jobs.

    ``on_batch(kind, num_items, num_jobs)`` is called after every model call (for metrics), before the
    jobs' futures resolve; ``after_batch()`` once they have resolved, so housekeeping there (such as
    returning freed memory, :mod:`bertkit.infer.memory`) delays no response of that batch. An exception in
    either is logged and the worker carries on.
    """

    _STOP = object()

    def __init__(self, run_batch: RunBatch, max_batch: int = 32, max_wait_ms: float = 5.0,
                 on_batch: Callable[[Hashable, int, int], None] | None = None,
                 after_batch: Callable[[], object] | None = None) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait_ms / 1000
        self.on_batch, self.after_batch = on_batch, after_batch
        self._queue: queue.Queue = queue.Queue()
        self._deferred: collections.deque[Job] = collections.deque()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="bertkit-model", daemon=True)
        self._worker.start()

    def submit(self, kind: Hashable, items: list[Any]) -> Future:
        """Queue a job; its future resolves to one result per item (or the exception the model raised)."""
        if self._closed:
            raise RuntimeError("the batcher is shut down")
        job = Job(kind, items)
        self._queue.put(job)
        return job.future

    def close(self, timeout: float | None = None) -> None:
        """Finish every job already submitted, then stop the worker."""
        self._closed = True
        self._queue.put(self._STOP)
        self._worker.join(timeout)

    def _next(self, timeout: float | None) -> Any:
        if self._deferred:
            return self._deferred.popleft()
        return self._queue.get(timeout=timeout)

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        """``first`` plus same-kind jobs arriving within the wait; True when the stop marker was seen."""
        jobs, count, stop = [first], len(first.items), False
        deadline = time.monotonic() + self.max_wait
        deferred: list[Job] = []
        while count < self.max_batch and not stop:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                job = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if job is self._STOP:
                stop = True
            elif job.kind == first.kind:
                jobs.append(job)
                count += len(job.items)
            else:
                deferred.append(job)
        self._deferred.extend(deferred)
        return jobs, stop

    def _loop(self) -> None:
        stopping = False
        while True:
            try:
                job = self._next(timeout=0 if stopping else None)
            except queue.Empty:  # stopping, and every job submitted before close() is done
                return
            if job is self._STOP:
                stopping = True
                continue
            jobs, saw_stop = self._gather(job)
            stopping = stopping or saw_stop
            self._execute(jobs)
            if self.after_batch is not None:
                try:
                    self.after_batch()
                except Exception:
                    log.exception("after-batch hook failed")

    def _execute(self, jobs: list[Job]) -> None:
        """One model call over all jobs' items; if it fails and several jobs shared it, retry each alone so
        only the job at fault gets the error."""
        items = [item for job in jobs for item in job.items]
        try:
            results = self.run_batch(jobs[0].kind, items)
        except Exception as error:  # the model's error belongs to the request(s), not to the worker
            if len(jobs) > 1:
                for job in jobs:
                    self._execute([job])
            else:
                jobs[0].future.set_exception(error)
            return
        if self.on_batch is not None:
            try:
                self.on_batch(jobs[0].kind, len(items), len(jobs))
            except Exception:
                log.exception("on-batch hook failed")
        start = 0
        for job in jobs:
            job.future.set_result(list(results[start:start + len(job.items)]))
            start += len(job.items)
