"""Streams: batches side by side on worker threads, results in order, thread counts kept apart."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest
import torch

from bertkit.infer.parallel_batches import Streams, default_streams, run_batches, streams_for


def thread_count_in_a_new_thread() -> int:
    seen = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    return seen[0]


def test_map_keeps_input_order_and_runs_each_worker_on_its_own_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    both_busy = threading.Barrier(2, timeout=10)  # passes only when two items run at the same time
    try:
        with Streams(2, 1) as streams:
            assert torch.get_num_threads() == 2 and thread_count_in_a_new_thread() == 2  # default given back

            def work(i: int) -> tuple[int, str, int]:
                if i < 2:
                    both_busy.wait()
                time.sleep(0.01 * (i % 3))  # uneven work: later items finish first unless order is kept
                return i, threading.current_thread().name, torch.get_num_threads()

            results = list(streams.map(work, range(12)))
    finally:
        torch.set_num_threads(before)
    assert [r[0] for r in results] == list(range(12))
    assert {r[1] for r in results[:2]} == {"bertkit-stream-0", "bertkit-stream-1"}
    assert {r[2] for r in results} == {1}


def test_map_holds_at_most_two_items_per_stream_ahead_of_the_consumer():
    started, go = [], threading.Event()

    def work(i: int) -> int:
        started.append(i)
        go.wait(10)
        return i

    with Streams(2, 1) as streams:
        results = streams.map(work, range(100))
        consumer = threading.Thread(target=next, args=(results,))  # queues items, then waits for item 0
        consumer.start()
        deadline = time.monotonic() + 10
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert sorted(started) == [0, 1] and streams._jobs.qsize() == 2  # two running, two queued, none beyond
        go.set()
        consumer.join()
        assert list(results) == list(range(1, 100))


def test_an_error_in_a_batch_reaches_the_caller_and_the_streams_keep_working():
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("batch 3 is broken")
        return i

    with Streams(2, 1) as streams:
        with pytest.raises(ValueError, match="batch 3 is broken"):
            list(streams.map(work, range(8)))
        assert list(streams.map(lambda i: i * 2, range(6))) == [0, 2, 4, 6, 8, 10]
    with pytest.raises(RuntimeError, match="closed"):
        next(streams.map(lambda i: i, range(2)))


def test_few_batches_run_in_the_caller_on_all_its_threads():
    with Streams(2, 1) as streams:
        names = list(run_batches(lambda _: threading.current_thread().name, [1, 2, 3], streams))
        assert set(names) == {threading.current_thread().name}  # 3 batches < 2 per stream
        names = list(run_batches(lambda _: threading.current_thread().name, [1, 2, 3, 4], streams))
        assert set(names) <= {"bertkit-stream-0", "bertkit-stream-1"}
    assert list(run_batches(lambda b: b + 1, [1, 2], None)) == [2, 3]


def test_pools_are_shared_and_one_stream_means_none():
    assert streams_for(1, 4) is None and streams_for(None, 1) is None
    pool = streams_for(2, 2)
    assert pool is streams_for(None, 2) and (pool.count, pool.threads) == (2, 1)
    assert default_streams(1) == 1 and default_streams(2) == 2 and default_streams(16) == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="streams must be a whole number >= 1"):
            streams_for(bad)
    with pytest.raises(ValueError, match="must be >= 1"):
        Streams(0, 1)


def _map_in_child(streams: Streams, out) -> None:
    out.put(list(streams.map(lambda i: i + 1, range(6))))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_restarts_the_workers_it_did_not_inherit():
    with Streams(2, 1) as streams:
        assert list(streams.map(lambda i: i, range(4))) == [0, 1, 2, 3]
        context = multiprocessing.get_context("fork")
        out = context.Queue()
        child = context.Process(target=_map_in_child, args=(streams, out))
        child.start()
        child.join(60)
        assert child.exitcode == 0 and out.get(timeout=5) == [1, 2, 3, 4, 5, 6]
