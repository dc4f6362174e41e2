"""Streams: batches side by side on worker threads, results in order, thread counts kept apart."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from bertkit.infer.streams import Streams, default_streams, run_batches


def thread_count_in_a_new_thread() -> int:
    seen = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    return seen[0]


def test_map_keeps_input_order_and_runs_each_worker_on_its_own_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with Streams(2, 1) as streams:
            assert torch.get_num_threads() == 2 and thread_count_in_a_new_thread() == 2  # default given back

            def work(i: int) -> tuple[int, str, int]:
                time.sleep(0.02 * (i % 3))  # uneven work: later items finish first unless order is kept
                return i, threading.current_thread().name, torch.get_num_threads()

            results = list(streams.map(work, range(12)))
    finally:
        torch.set_num_threads(before)
    assert [r[0] for r in results] == list(range(12))
    assert {r[1] for r in results} == {"bertkit-stream-0", "bertkit-stream-1"}
    assert {r[2] for r in results} == {1}


def test_map_holds_at_most_two_items_per_stream_ahead_of_the_consumer():
    started = []

    def work(i: int) -> int:
        started.append(i)
        return i

    with Streams(2, 1) as streams:
        results = streams.map(work, range(100))
        assert next(results) == 0
        time.sleep(0.05)
        assert len(started) <= 4
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


def test_few_batches_run_in_the_caller_on_all_its_threads():
    with Streams(2, 1) as streams:
        names = list(run_batches(lambda _: threading.current_thread().name, [1, 2, 3], streams))
        assert set(names) == {threading.current_thread().name}  # 3 batches < 2 per stream
        names = list(run_batches(lambda _: threading.current_thread().name, [1, 2, 3, 4], streams))
        assert set(names) <= {"bertkit-stream-0", "bertkit-stream-1"}
    assert list(run_batches(lambda b: b + 1, [1, 2], None)) == [2, 3]


def test_default_is_two_streams_only_with_threads_to_share():
    assert default_streams(1) == 1 and default_streams(2) == 2 and default_streams(16) == 2
    with pytest.raises(ValueError, match="must be >= 1"):
        Streams(0, 1)
