"""Run independent batches side by side on the CPU, each on its own share of the threads.

One forward split across all threads (intra-op parallelism) has the threads meet at the end of every
operator, and many operators of a small encoder (LayerNorm, attention over short texts, the padding
copies) are too small to split well. Two batches in flight, each on half the threads, keep every core
busy without those waits. On 2 AVX2 cores, embedding 512 sentences with all-MiniLM-L6-v2 in batches of 32,
two streams of one thread ran 1.07-1.18x faster end to end in fp32 and 1.13-1.19x in int8 than one batch
at a time on both threads, over five runs (``benchmarks/inference.py``, figures in ``benchmarks/RESULTS.md``).

A call with few batches (fewer than two per stream) runs them one at a time in the caller, on all of its
threads, so a single request keeps its latency.

torch's thread count is per thread (OpenMP), but :func:`torch.set_num_threads` also sets the default that
threads started later take. Each worker therefore takes its count once, at start, and the pool then gives
the process its previous default back. Pools are made once per shape and shared (:func:`shared_streams`),
so that dance happens once, under a lock, and two models in one process share the same workers instead
of oversubscribing the cores.
"""

from __future__ import annotations

import collections
import functools
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_CREATING = threading.Lock()


def default_streams(threads: int | None = None) -> int:
    """2 when there are at least 2 CPU threads to share, else 1."""
    return 2 if (threads or torch.get_num_threads()) >= 2 else 1


def check_streams(streams: int | None) -> None:
    if streams is not None and (isinstance(streams, bool) or not isinstance(streams, int) or streams < 1):
        raise ValueError(f"streams must be a whole number >= 1, got {streams!r}")


class Streams:
    """``count`` worker threads, each running torch on ``threads`` intra-op threads.

    Use :meth:`map` to run a function over batches, ``count`` at a time, with results in input order.
    """

    def __init__(self, count: int, threads: int) -> None:
        if count < 1 or threads < 1:
            raise ValueError(f"streams and threads per stream must be >= 1, got {count} and {threads}")
        self.count, self.threads = count, threads
        self._closed = False
        self._starting = threading.Lock()
        self._start()

    def _start(self) -> None:
        """Start the workers (again in a forked child, which inherits the pool but none of its threads)."""
        self._pid = os.getpid()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        default = torch.get_num_threads()
        ready = threading.Barrier(self.count + 1)
        self._workers = [threading.Thread(target=self._work, args=(ready,), name=f"bertkit-stream-{i}",
                                          daemon=True) for i in range(self.count)]
        try:
            for worker in self._workers:
                worker.start()
            ready.wait()
        except BaseException:
            ready.abort()  # workers already waiting give up and exit
            raise
        finally:
            torch.set_num_threads(default)  # the workers' setting leaked into the process default; restore it

    def _work(self, ready: threading.Barrier) -> None:
        torch.get_num_threads()  # take the process default first, so the setting below is not overwritten
        torch.set_num_threads(self.threads)
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        while (job := self._jobs.get()) is not None:
            future, fn, item = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(item))
                except BaseException as error:  # handed to the caller, who re-raises it
                    future.set_exception(error)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn(item)`` for every item, in order; at most ``2 * count`` items are queued or held at once.

        Stopping early (closing the generator, or an error from one item) cancels the items not yet started.
        """
        if self._closed:
            raise RuntimeError("these streams are closed")
        if self._pid != os.getpid():
            with self._starting:
                if self._pid != os.getpid():
                    self._start()
        pending: collections.deque[Future] = collections.deque()
        try:
            for item in items:
                if len(pending) >= 2 * self.count:
                    yield pending.popleft().result()
                future: Future = Future()
                self._jobs.put((future, fn, item))
                pending.append(future)
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        """Stop the workers once the queued jobs are done."""
        self._closed = True
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            worker.join()

    def __enter__(self) -> Streams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def streams_for(streams: int | None, threads: int | None = None) -> Streams | None:
    """The shared pool that splits ``threads`` (default: torch's count) into ``streams`` (default:
    :func:`default_streams`), or None when that is one stream."""
    check_streams(streams)
    total = threads or torch.get_num_threads()
    count = streams or default_streams(total)
    return shared_streams(count, max(1, total // count)) if count > 1 else None


def shared_streams(count: int, threads: int) -> Streams:
    """The process's one pool of ``count`` streams of ``threads`` threads each, made on first use."""
    with _CREATING:
        return _make_shared(count, threads)


@functools.cache
def _make_shared(count: int, threads: int) -> Streams:
    return Streams(count, threads)


def run_batches(fn: Callable[[T], R], batches: Sequence[T], streams: Streams | None) -> Iterator[R]:
    """``fn`` over ``batches`` in order: on ``streams`` when given and there are at least two batches per
    stream, else here in the caller on all of its threads.

    With fewer batches than that, one stream would finish early and sit idle while the other still runs
    a batch on its share of the threads: slower than one batch at a time on all of them.
    """
    if streams is None or len(batches) < 2 * streams.count:
        for batch in batches:
            yield fn(batch)
    else:
        yield from streams.map(fn, batches)
