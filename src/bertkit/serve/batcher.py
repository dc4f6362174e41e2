"""Micro-batching: requests that arrive close together share one model call, run by a single worker thread.

A model forward over 16 texts costs far less than 16 forwards of one text, so under concurrent load the
worker takes the oldest waiting job, then keeps gathering jobs of the same kind (same endpoint and options)
until it holds ``max_batch`` items or ``max_wait_ms`` has passed, runs them as one call and hands each job
its slice of the results. An item may weigh more than one (the server weighs a text by its length, since a
2,000-character text costs a forward as much as eight short ones): ``max_batch`` bounds the weight of a
call. One worker thread owns the model: no locking inside it, and CPU threads are not oversubscribed by
parallel forwards. Jobs of another kind met while gathering wait for the next round.

Under overload the batcher protects the requests it can still answer. It holds at most ``max_queue`` texts
(queued or running); past that, :meth:`MicroBatcher.submit` raises :class:`QueueFull` at once instead of
queueing work nobody will wait for. A request heavier than ``max_batch`` is cut into parts of at most
``max_batch``, so the worker is never busy for longer than one such call before it can drop work: a job whose
future was cancelled (its client hung up, or gave up) is skipped, and one past its deadline fails with
:class:`DeadlineExceeded` without running.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("bertkit")

RunBatch = Callable[[Hashable, list[Any]], Sequence[Any]]  # (kind, items) -> one result per item


class QueueFull(RuntimeError):
    """The batcher already holds ``max_queue`` texts; the request should be refused and retried later."""


class DeadlineExceeded(TimeoutError):
    """A job's deadline passed before the worker reached it; it was dropped without running."""


@dataclass
class Job:
    kind: Hashable  # jobs merge only with jobs of the same kind, e.g. ("embed", "mean", False)
    items: list[Any]
    weight: int  # of all its items, counted against max_batch
    deadline: float = math.inf  # time.monotonic() past which the job is dropped instead of run
    future: Future = field(default_factory=Future)


def _settle(future: Future, result: Any = None, error: BaseException | None = None) -> bool:
    """Resolve ``future`` unless it was cancelled meanwhile (its client is gone); False then."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        return False
    return True


class MicroBatcher:
    """Runs ``run_batch(kind, items)`` on one worker thread over merged jobs.

    ``max_queue``: the most texts held at once (None: no bound). ``on_batch(kind, num_items, num_jobs)`` is
    called after every model call (for metrics), before the jobs' futures resolve; ``after_batch()`` once
    they have resolved, so housekeeping there (such as returning freed memory, :mod:`bertkit.infer.memory`)
    delays no response of that batch. An exception in either is logged and the worker carries on.
    """

    _STOP = object()

    def __init__(self, run_batch: RunBatch, max_batch: int = 32, max_wait_ms: float = 5.0,
                 on_batch: Callable[[Hashable, int, int], None] | None = None,
                 after_batch: Callable[[], object] | None = None, max_queue: int | None = None) -> None:
        if max_batch < 1 or max_wait_ms < 0 or (max_queue is not None and max_queue < 1):
            raise ValueError(f"max_batch and max_queue must be >= 1 and max_wait_ms >= 0, "
                             f"got {max_batch}, {max_queue}, {max_wait_ms}")
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait_ms / 1000
        self.on_batch, self.after_batch, self.max_queue = on_batch, after_batch, max_queue
        self._queue: queue.Queue = queue.Queue()
        self._deferred: collections.deque[Job] = collections.deque()
        self._held, self._held_lock = 0, threading.Lock()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="bertkit-model", daemon=True)
        self._worker.start()

    @property
    def held(self) -> int:
        """Texts queued or running now."""
        return self._held

    def submit(self, kind: Hashable, items: list[Any], timeout: float | None = None,
               weights: Sequence[int] | None = None) -> Future:
        """Queue a job; its future resolves to one result per item (or the exception the model raised).

        ``timeout``: seconds from now after which the job is dropped with :class:`DeadlineExceeded`
        instead of run. Cancelling the future drops whatever of the job has not run yet. ``weights``: one
        per item (default 1 each). Raises :class:`QueueFull` when the batcher cannot take ``len(items)``
        more texts.
        """
        if self._closed:
            raise RuntimeError("the batcher is shut down")
        weights = [1] * len(items) if weights is None else list(weights)
        if len(weights) != len(items) or min(weights, default=1) < 1:
            raise ValueError(f"weights must be one integer >= 1 per item; got {len(weights)} for {len(items)} items")
        with self._held_lock:
            if self.max_queue is not None and self._held + len(items) > self.max_queue:
                raise QueueFull(f"the server holds {self._held} texts; {len(items)} more would pass "
                                f"its queue limit of {self.max_queue}")
            self._held += len(items)
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        parts = [Job(kind, items[a:b], sum(weights[a:b]), deadline) for a, b in _spans(weights, self.max_batch)]
        for part in parts:
            part.future.add_done_callback(functools.partial(self._release, len(part.items)))
        whole = parts[0].future if len(parts) == 1 else _joined([part.future for part in parts])
        for part in parts:
            self._queue.put(part)
        return whole

    def _release(self, texts: int, _: Future) -> None:
        """A part resolved (run, failed or cancelled): its texts no longer count against ``max_queue``."""
        with self._held_lock:
            self._held -= texts

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
        jobs, weight, stop = [first], first.weight, False
        deadline = time.monotonic() + self.max_wait
        deferred: list[Job] = []
        while weight < self.max_batch and not stop:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                job = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if job is self._STOP:
                stop = True
            elif not self._live(job):
                continue
            elif job.kind != first.kind:
                deferred.append(job)
            elif weight + job.weight > self.max_batch:
                deferred.append(job)  # it leads the next call, which keeps every call within max_batch
                break
            else:
                jobs.append(job)
                weight += job.weight
        self._deferred.extend(deferred)
        return jobs, stop

    @staticmethod
    def _live(job: Job) -> bool:
        """False for a job to drop: cancelled (nobody waits for it) or past its deadline (failed here)."""
        if job.future.cancelled():
            return False
        if time.monotonic() > job.deadline:
            _settle(job.future, error=DeadlineExceeded("the request passed its deadline before the model ran it"))
            return False
        return True

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
            if not self._live(job):
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
                _settle(jobs[0].future, error=error)
            return
        if self.on_batch is not None:
            try:
                self.on_batch(jobs[0].kind, len(items), len(jobs))
            except Exception:
                log.exception("on-batch hook failed")
        start = 0
        for job in jobs:
            _settle(job.future, list(results[start:start + len(job.items)]))
            start += len(job.items)


def _spans(weights: list[int], limit: int) -> list[tuple[int, int]]:
    """Cut ``weights`` into consecutive [start, end) spans of total weight at most ``limit`` (an item heavier
    than the limit alone); one empty span for no items."""
    spans, start, total = [], 0, 0
    for i, w in enumerate(weights):
        if i > start and total + w > limit:
            spans.append((start, i))
            start, total = i, 0
        total += w
    spans.append((start, len(weights)))
    return spans


def _joined(parts: list[Future]) -> Future:
    """One future over the parts of a job: their results in order, the first error, or cancelled with them."""
    whole: Future = Future()

    def part_done(part: Future) -> None:
        if whole.done() or part.cancelled():
            return
        if part.exception() is not None:
            _settle(whole, error=part.exception())
            return
        if all(p.done() for p in parts):
            with contextlib.suppress(CancelledError):  # the whole was cancelled as the last part finished
                _settle(whole, [result for p in parts for result in p.result()])

    def whole_done(_: Future) -> None:
        for part in parts:
            part.cancel()  # a no-op for parts already resolved; drops the rest after an error or a cancel

    for part in parts:
        part.add_done_callback(part_done)
    whole.add_done_callback(whole_done)
    return whole
