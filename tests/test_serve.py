"""The HTTP server over real loopback sockets: results, micro-batching, limits, bad input, metrics, shutdown."""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from bertkit.infer.memory import HeapTrimmer
from bertkit.infer.predictor import Predictor
from bertkit.serve.app import ServeSettings, create_app
from bertkit.serve.batcher import MicroBatcher
from infer_toys import make_model_dirs
from serve_helpers import Server, metric


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    return make_model_dirs(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def classify_server(dirs):
    settings = ServeSettings(max_batch=64, max_wait_ms=200, max_texts=8, max_text_chars=2000, max_body_bytes=20_000)
    server = Server(create_app(Predictor(dirs["classify"]), settings))
    yield server
    server.stop()


def test_classify_returns_the_predictor_results_and_flags_truncation(classify_server, dirs):
    texts = ["the film was good", "", "bad " * 200]
    response = httpx.post(f"{classify_server.url}/v1/classify", json={"texts": texts})
    assert response.status_code == 200
    results = response.json()["results"]
    expected = Predictor(dirs["classify"]).classify(texts)
    assert [r["label"] for r in results] == [e.label for e in expected]
    assert [r["truncated"] for r in results] == [False, False, True]
    assert results[0]["probabilities"]["pos"] == pytest.approx(expected[0].probabilities["pos"], abs=1e-5)


def test_concurrent_requests_share_a_model_call(classify_server):
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: httpx.post(f"{classify_server.url}/v1/classify",
                                                   json={"texts": [f"text {i}"]}).status_code, range(8)))
    assert codes == [200] * 8
    text = httpx.get(f"{classify_server.url}/metrics").text
    merged = [line for line in text.splitlines() if line.startswith("bertkit_batch_requests_bucket")
              and 'le="1.0"' in line]
    total = metric(text, "bertkit_batch_requests_count")
    assert float(merged[0].rsplit(" ", 1)[1]) < total  # some model call served more than one request
    assert 'bertkit_requests_total{endpoint="classify",status="200"}' in text
    assert "bertkit_request_seconds_bucket" in text


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"texts": ["a"] * 9}, 413, "9 texts in one request; the limit is 8"),
    ({"texts": ["a" * 2001]}, 422, "texts[0] has 2001 characters"),
    ({"texts": "not a list"}, 422, "texts"),
    ({"texts": [1, 2]}, 422, "texts.0"),
    ({"text": ["a"]}, 422, "texts: Field required"),
    ({"texts": ["a"], "pairs": ["b"]}, 422, "fine-tuned for task 'classify': it takes no 'pairs'"),
])
def test_bad_requests_get_json_errors(classify_server, body, status, message):
    response = httpx.post(f"{classify_server.url}/v1/classify", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_malformed_bodies_and_other_tasks_get_json_errors(classify_server):
    url = classify_server.url
    json_type = {"content-type": "application/json"}
    cases = [
        (httpx.post(f"{url}/v1/classify", content=b'{"texts": ["\xff\xfe"]}', headers=json_type), 400),  # not UTF-8
        (httpx.post(f"{url}/v1/classify", content=b'{"texts": [', headers=json_type), 400),
        (httpx.post(f"{url}/v1/classify", content=b"x" * 30_000, headers=json_type), 413),
        (httpx.post(f"{url}/v1/classify", content=b'["a"]', headers=json_type), 422),
        (httpx.post(f"{url}/v1/classify", json={"texts": ["a"] * 10_000}), 413),
        (httpx.post(f"{url}/v1/tag", json={"texts": ["a"]}), 404),
        (httpx.post(f"{url}/v1/answer", json={"texts": ["who"]}), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.json()["status"] == status
    assert "fine-tuned for task 'classify'" in cases[-2][0].json()["error"]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "task": "classify",
                                                   "endpoints": ["/v1/classify", "/v1/embed"]}
    assert httpx.get(f"{url}/openapi.json").status_code == 200
    assert metric(httpx.get(f"{url}/metrics").text, "bertkit_errors_total") >= len(cases)


def test_qa_needs_contexts_and_every_task_endpoint_answers(dirs):
    servers = {name: Server(create_app(Predictor(dirs[name]))) for name in ("qa", "tag", "pretrained")}
    try:
        qa = servers["qa"].url
        missing = httpx.post(f"{qa}/v1/answer", json={"texts": ["what colour"]})
        assert missing.status_code == 422 and "contexts: Field required" in missing.json()["error"]
        answer = httpx.post(f"{qa}/v1/answer", json={"texts": ["what colour"], "contexts": ["the car was red"]})
        assert answer.status_code == 200 and set(answer.json()["results"][0]) >= {"text", "start", "end", "score"}
        tag = httpx.post(f"{servers['tag'].url}/v1/tag", json={"texts": ["alice visited paris", ""]})
        assert tag.status_code == 200 and len(tag.json()["results"]) == 2
        url = servers["pretrained"].url
        fill = httpx.post(f"{url}/v1/fill-mask", json={"texts": ["the [MASK] was good"], "top_k": 2})
        assert len(fill.json()["results"][0]["masks"][0]) == 2
        assert httpx.post(f"{url}/v1/fill-mask", json={"texts": ["no mask"]}).status_code == 422
        embed = httpx.post(f"{url}/v1/embed", json={"texts": ["a", "b c"], "normalize": True}).json()["results"]
        assert len(embed[0]["embedding"]) == 32 and sum(x * x for x in embed[1]["embedding"]) == pytest.approx(1, 1e-4)
    finally:
        for server in servers.values():
            server.stop()


def test_sigterm_finishes_the_request_in_flight(dirs):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "BERTKIT_API_KEY": ""}
    process = subprocess.Popen([sys.executable, "-m", "bertkit", "serve", "--model", str(dirs["classify"]),
                                "--port", str(port), "--max-wait-ms", "1500"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/v1/classify", json={"texts": ["good"]}, timeout=30)
            time.sleep(0.5)  # the request now waits in the batcher (max wait 1.5 s)
            process.send_signal(signal.SIGTERM)
            response = pending.result()
        assert response.status_code == 200 and response.json()["results"][0]["label"] in ("neg", "pos")
        assert process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
    finally:
        if process.poll() is None:
            process.kill()
        output = process.stdout.read().decode()
    assert "Traceback" not in output, output


def test_after_batch_runs_once_results_are_delivered_and_hook_errors_do_not_stop_the_worker():
    submitted, release, seen = [], threading.Event(), []

    def run(kind, items):
        release.wait(5)  # the test holds the future before the batch runs
        return [2 * i for i in items]

    def after():
        seen.append(submitted[0].done())
        raise RuntimeError("housekeeping failed")

    batcher = MicroBatcher(run, max_wait_ms=0, on_batch=lambda *_: 1 / 0, after_batch=after)
    try:
        submitted.append(batcher.submit("k", [1, 2]))
        release.set()
        assert submitted[0].result(5) == [2, 4]
        assert batcher.submit("k", [3]).result(5) == [6]  # both hooks raised; the worker still serves
    finally:
        batcher.close(5)
    assert seen[:1] == [True]


GLIBC = platform.libc_ver()[0] == "glibc"


def fragment_heap(megabytes: int = 96) -> tuple[list[bytearray], int]:
    """Leave ~``megabytes`` of touched, freed heap between live blocks (free memory the allocator keeps): the
    live blocks and the bytes freed. 48 KB blocks stay under glibc's mmap threshold, so they come from the heap."""
    block = 48 * 1024
    blocks = [bytearray(b"\x01") * block for _ in range(megabytes * 2**20 // block)]
    kept = blocks[::16]  # live blocks pin the heap, so the freed ones cannot be trimmed from its top
    return kept, (len(blocks) - len(kept)) * block


def resident_bytes() -> int:
    """This process's resident set size, read from /proc (Linux: every CI machine)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_heap_trimmer_returns_freed_heap_to_the_os_at_most_once_per_interval():
    assert GLIBC, "the server's memory bound relies on glibc's malloc_trim"  # Linux with glibc: every CI machine
    kept, freed = fragment_heap()
    before = resident_bytes()
    assert not HeapTrimmer(interval_s=3600).maybe_trim()  # too soon: nothing released
    assert before - resident_bytes() < freed // 4
    trimmer = HeapTrimmer(interval_s=0)
    before = resident_bytes()
    assert trimmer.maybe_trim()
    assert before - resident_bytes() > freed // 2, (before, resident_bytes(), freed)
    assert trimmer.trims == 1 and len(kept) > 100
    with pytest.raises(ValueError, match="interval_s"):
        HeapTrimmer(interval_s=-1)


def test_metrics_report_resident_memory_and_heap_trims(dirs):
    server = Server(create_app(Predictor(dirs["classify"]), ServeSettings(trim_interval_s=0)))
    try:
        before = httpx.get(f"{server.url}/metrics").text
        for _ in range(2):  # the first call's trim is done before the worker takes the second call
            assert httpx.post(f"{server.url}/v1/classify", json={"texts": ["good"]}).status_code == 200
        after = httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()
    assert GLIBC
    assert metric(before, "bertkit_heap_trims_total") == 0  # no model call yet, so no trim
    assert metric(after, "bertkit_heap_trims_total") >= 1  # a model call, then a trim
    resident = metric(after, "process_resident_memory_bytes")
    assert abs(resident - resident_bytes()) < 0.2 * resident_bytes()  # this process's RSS, read live
