"""Backpressure over real loopback HTTP: a bounded queue, deadlines, hung-up clients, slow clients.

The model is wrapped so a test can hold it busy (a shut gate) or make each call slow, and can read back
every call's texts: work that was dropped is work the model never saw.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from bertkit.infer.predictor import Predictor
from bertkit.serve.app import ServeSettings, create_app
from bertkit.serve.batcher import DeadlineExceeded, MicroBatcher, QueueFull
from infer_toys import make_model_dirs
from serve_helpers import Server, metric


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return make_model_dirs(tmp_path_factory.mktemp("backpressure"))["pretrained"]


class WatchedModel:
    """Wraps ``predictor.embed``: records each call's texts, holds calls while ``gate`` is shut, and can make
    every call take ``delay_s`` longer (a model slow enough for a queue to build up)."""

    def __init__(self, predictor: Predictor, delay_s: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.gate, self.running = threading.Event(), threading.Event()
        self.gate.set()
        embed = predictor.embed

        def watched(texts, *args, **kwargs):
            self.calls.append(list(texts))
            self.running.set()
            self.gate.wait(30)
            time.sleep(delay_s)
            return embed(texts, *args, **kwargs)

        predictor.embed = watched

    def texts(self) -> list[str]:
        return [text for call in self.calls for text in call]


@pytest.fixture
def watched(model_dir):
    predictor = Predictor(model_dir)
    model = WatchedModel(predictor)
    yield predictor, model
    model.gate.set()


def embed(url: str, texts: list[str], timeout: float | httpx.Timeout = 30) -> httpx.Response:
    return httpx.post(f"{url}/v1/embed", json={"texts": texts}, timeout=timeout)


def dropped(url: str, reason: str) -> float:
    series = f'bertkit_requests_dropped_total{{endpoint="embed",reason="{reason}"}}'
    return metric(httpx.get(f"{url}/metrics").text, series)


def wait_until(condition, seconds: float = 20) -> bool:
    stop = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > stop:
            return False
        time.sleep(0.05)
    return True


def test_a_full_queue_answers_503_with_retry_after(watched):
    predictor, model = watched
    model.gate.clear()
    settings = ServeSettings(max_texts=4, max_queue=4, max_wait_ms=0)
    with Server(create_app(predictor, settings)) as server, ThreadPoolExecutor(1) as pool:
        first = pool.submit(embed, server.url, ["a", "b", "c", "d"])
        assert model.running.wait(10)
        refused = embed(server.url, ["e"])
        model.gate.set()
        assert first.result().status_code == 200
        after = embed(server.url, ["f"])  # the finished request gave its room back
        drops = dropped(server.url, "queue_full")
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "queue limit of 4" in refused.json()["error"]
    assert after.status_code == 200 and drops == 1
    assert model.calls == [["a", "b", "c", "d"], ["f"]]


def test_a_request_past_its_deadline_gets_504_and_its_work_is_dropped(watched):
    predictor, model = watched
    model.gate.clear()
    settings = ServeSettings(request_timeout_s=1, max_wait_ms=0)
    with Server(create_app(predictor, settings)) as server, ThreadPoolExecutor(1) as pool:
        held = pool.submit(embed, server.url, ["held"])
        assert model.running.wait(10)
        late = embed(server.url, ["late"])  # waits behind the held call until its deadline passes
        model.gate.set()
        held_status = held.result().status_code
        after = embed(server.url, ["after"])
        drops = dropped(server.url, "deadline")
    assert late.status_code == 504 and "deadline of 1" in late.json()["error"]
    assert held_status == 504  # answered at its deadline although its model call was still running
    assert after.status_code == 200 and drops == 2
    assert model.calls == [["held"], ["after"]]


def test_work_of_clients_that_hung_up_is_dropped_before_it_runs(watched):
    predictor, model = watched
    model.gate.clear()
    with Server(create_app(predictor, ServeSettings(max_wait_ms=0))) as server, ThreadPoolExecutor(1) as pool:
        held = pool.submit(embed, server.url, ["held"])
        assert model.running.wait(10)
        for i in range(5):
            with pytest.raises(httpx.ReadTimeout):
                embed(server.url, [f"abandoned {i}"], timeout=httpx.Timeout(30, read=0.3))
        assert wait_until(lambda: dropped(server.url, "disconnected") == 5)
        model.gate.set()
        assert held.result().status_code == 200
        assert embed(server.url, ["after"]).status_code == 200
    assert model.calls == [["held"], ["after"]]


def test_one_text_is_answered_soon_after_40_abandoned_maximum_size_requests(model_dir):
    """Each model call of 8 texts takes 0.2 s: the 40 requests hold 320 such calls (64 s of work)."""
    predictor = Predictor(model_dir)
    model = WatchedModel(predictor, delay_s=0.2)
    settings = ServeSettings(max_batch=8, max_texts=64, max_text_chars=1000, max_queue=64 * 40, max_wait_ms=0)
    big = ["word " * 200] * 64
    with Server(create_app(predictor, settings)) as server, ThreadPoolExecutor(8) as pool:
        def abandon(_: int) -> None:
            with pytest.raises(httpx.ReadTimeout):
                embed(server.url, big, timeout=httpx.Timeout(30, read=0.3))

        list(pool.map(abandon, range(40)))
        started = time.monotonic()
        answer = embed(server.url, ["one text"])
        elapsed = time.monotonic() - started
    assert answer.status_code == 200 and len(answer.json()["results"]) == 1
    assert elapsed < 10, f"one text took {elapsed:.1f} s after 40 abandoned requests"
    assert len(model.calls) < 40  # of the 320 calls the abandoned requests held, most never ran


@pytest.mark.parametrize("sent", [
    b"",
    b"POST /v1/embed HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n",
    b'POST /v1/embed HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{"texts": ["a',
], ids=["nothing", "half the headers", "half the body"])
def test_a_half_sent_request_is_closed_at_the_read_timeout(model_dir, sent):
    with Server(create_app(Predictor(model_dir)), read_timeout_s=1) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            client.settimeout(20)  # a recv that is still blocked then fails the test
            client.sendall(sent)
            started = time.monotonic()
            while client.recv(65536):
                pass
            elapsed = time.monotonic() - started
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        if b"Content-Length" in sent:  # the handler waiting for the body was answered, and counted, as 408
            series = 'bertkit_requests_total{endpoint="embed",status="408"}'
            assert wait_until(lambda: metric(httpx.get(f"{server.url}/metrics").text, series) == 1)
    assert elapsed < 10


def test_the_read_timeout_spares_complete_requests_on_a_kept_alive_connection(model_dir):
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with (Server(create_app(Predictor(model_dir)), read_timeout_s=1) as server,
          socket.create_connection(("127.0.0.1", server.port)) as client):
        client.settimeout(20)
        answers = []
        for pause in (0, 1.5):  # idle past the read timeout between requests (under keep-alive's 5 s)
            time.sleep(pause)
            client.sendall(request[:20])
            time.sleep(0.3)
            client.sendall(request[20:])
            answer = b""
            while not answer.endswith(b"}"):  # the status line, headers and JSON body may come in pieces
                answer += client.recv(65536) or b"}"  # b"": the server closed, which the assert below reports
            answers.append(answer)
    assert all(a.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in a for a in answers)


def test_connections_past_the_concurrency_limit_get_503(model_dir):
    with Server(create_app(Predictor(model_dir)), limit_concurrency=3) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        assert wait_until(lambda: len(server.server.server_state.connections) == 3)
        refused = httpx.get(f"{server.url}/healthz")
        for sock in idle:
            sock.close()
        assert wait_until(lambda: httpx.get(f"{server.url}/healthz").status_code == 200)
    assert refused.status_code == 503


def test_the_batcher_bounds_its_queue_and_frees_room_as_jobs_finish():
    release = threading.Event()
    batcher = MicroBatcher(lambda kind, items: release.wait(10) and items, max_wait_ms=0, max_queue=3)
    try:
        first = batcher.submit("k", [1, 2])
        with pytest.raises(QueueFull, match="queue limit of 3"):
            batcher.submit("k", [3, 4])
        second = batcher.submit("k", [3])
        release.set()
        assert first.result(10) == [1, 2] and second.result(10) == [3]
        assert wait_until(lambda: batcher.held == 0, 10)
        assert batcher.submit("k", [5, 6, 7]).result(10) == [5, 6, 7]
    finally:
        batcher.close(10)


def test_the_batcher_cuts_large_jobs_and_drops_cancelled_and_expired_ones():
    calls, release = [], threading.Event()

    def run(kind, items):
        calls.append(list(items))
        release.wait(10)
        return items

    batcher = MicroBatcher(run, max_batch=2, max_wait_ms=0)
    try:
        held = batcher.submit("k", ["held"])
        assert wait_until(lambda: calls, 10)
        cancelled = batcher.submit("k", ["c1", "c2", "c3", "c4", "c5"])
        expired = batcher.submit("k", ["e1"], timeout=0.01)
        whole = batcher.submit("k", ["w1", "w2", "w3"])
        assert cancelled.cancel()
        time.sleep(0.05)  # the expired job's deadline passes while the model is held
        release.set()
        assert held.result(10) == ["held"] and whole.result(10) == ["w1", "w2", "w3"]
        with pytest.raises(DeadlineExceeded):
            expired.result(10)
    finally:
        batcher.close(10)
    assert calls == [["held"], ["w1", "w2"], ["w3"]]


def test_the_batcher_weighs_items_so_a_call_of_heavy_items_holds_fewer():
    calls = []
    batcher = MicroBatcher(lambda kind, items: calls.append(list(items)) or items, max_batch=4, max_wait_ms=0)
    try:
        assert batcher.submit("k", list("abcde"), weights=[3, 3, 9, 1, 1]).result(10) == list("abcde")
        with pytest.raises(ValueError, match="one integer >= 1 per item"):
            batcher.submit("k", ["a", "b"], weights=[1])
        assert wait_until(lambda: batcher.held == 0, 10)  # the refused job holds no room
    finally:
        batcher.close(10)
    assert calls == [["a"], ["b"], ["c"], ["d", "e"]]  # each call within a weight of 4; 9 alone
