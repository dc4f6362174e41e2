"""Load test of ``bertkit serve`` on loopback (all-MiniLM-L6-v2, /v1/embed), in three modes.

``--mode load`` (default): N concurrent clients for a bounded time, after a warm-up under the same load.
Reports requests/s, p50/p99 latency, errors (should be 0), the server's model-call batch sizes, and its
resident memory (RSS), sampled every second: at several points of the run and as the median (and peak) of
each quarter of it. The drift of those medians is ~0 when RSS is flat and keeps climbing while memory
accumulates.

``--mode abandon``: per round, the latency of a one-text request on the idle server (the reference), then
``--abandoned`` maximum-size requests (``--max-texts`` texts filling the body limit) from 8 threads whose
clients give up after 0.3 s, then the latency of a one-text request right after. Goal: under 2 s.

``--mode slow``: ``--slow-clients`` connections each send half a request (half the headers, or the headers
and half the body) and stop; reports how long the server takes to close them (goal: within 30 s; the
server's ``--read-timeout`` is 10 s) and a one-text request's latency while they hang, against idle.

Each server is a subprocess on a free 127.0.0.1 port with the CLI's default limits.

    python benchmarks/serve_load.py [--clients 8] [--seconds 60] [--max-requests 20000] [--threads 2]
                                    [--trim-interval 1.0]   (negative: the server never trims its heap)
    python benchmarks/serve_load.py --mode abandon [--abandoned 40] [--rounds 5]
    python benchmarks/serve_load.py --mode slow [--slow-clients 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from common import machine, minilm_dir, mixed_sentences


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, port: int, threads: int, trim_interval: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "bertkit", "serve", "--model", str(model), "--port", str(port),
                                "--threads", str(threads), "--trim-interval", str(trim_interval)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "BERTKIT_API_KEY": ""})
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except httpx.TransportError:
            if process.poll() is not None:
                raise SystemExit(f"server exited: {process.stderr.read().decode()}") from None
            time.sleep(0.1)
    raise SystemExit("server did not start within 60 s")


def client(url: str, texts: list[str], seed: int, stop_at: float, budget: list[int], lock: threading.Lock,
           latencies: list[float], errors: list[str]) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=60) as http:
        while time.monotonic() < stop_at:
            with lock:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            body = {"texts": rng.sample(texts, rng.randint(1, 4))}
            start = time.perf_counter()
            try:
                response = http.post(url, json=body)
                ok = response.status_code == 200 and len(response.json()["results"]) == len(body["texts"])
                if not ok:
                    errors.append(f"{response.status_code} {response.text[:100]}")
            except httpx.HTTPError as e:
                errors.append(repr(e))
            latencies.append(time.perf_counter() - start)


def run_clients(url: str, texts: list[str], clients: int, seconds: float, max_requests: int,
                seed: int) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    budget, lock = [max_requests], threading.Lock()
    stop_at = time.monotonic() + seconds
    workers = [threading.Thread(target=client, args=(url, texts, seed + i, stop_at, budget, lock, latencies, errors))
               for i in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies, errors


class RssSampler:
    """Samples a process's RSS every ``every`` seconds on a thread: (seconds since start, MB) pairs."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        self.pid, self.every, self.samples = pid, every, []
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self._start, rss_mb(self.pid)))
            self._stop.wait(self.every)

    def mark(self) -> float:
        """Seconds since the sampler started (to cut the samples into phases)."""
        return time.monotonic() - self._start

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t: float) -> float:
        """The sample nearest to ``t`` seconds."""
        return min(self.samples, key=lambda s: abs(s[0] - t))[1]

    def between(self, start: float, end: float) -> list[float]:
        return [mb for t, mb in self.samples if start <= t <= end]


def metric_value(metrics: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name + " "))


def batch_mean(metrics: str) -> float:
    values = {k: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              for k in ("sum", "count") if line.startswith(f'bertkit_batch_size_{k}{{endpoint="embed"}}')}
    return values.get("sum", 0.0) / max(values.get("count", 0.0), 1.0)


def run_load(args: argparse.Namespace) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/embed"
    texts = mixed_sentences(512)
    server = start_server(minilm_dir(), port, args.threads, args.trim_interval)
    try:
        sampler = RssSampler(server.pid)
        t_start, rss_idle = sampler.mark(), rss_mb(server.pid)
        # warm-up under the same load, so caches and the allocator reach their working size first
        run_clients(url, texts, args.clients, args.warmup, args.max_requests, seed=1000)
        t0 = sampler.mark()
        started = time.perf_counter()
        latencies, errors = run_clients(url, texts, args.clients, args.seconds, args.max_requests, seed=0)
        elapsed = time.perf_counter() - started
        t1 = sampler.mark()
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        sampler.stop()
    finally:
        server.terminate()
        server.wait(30)

    latencies.sort()
    points = [t0 + f * (t1 - t0) for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    rss = [sampler.at(t) for t in points]
    trims = metric_value(metrics, "bertkit_heap_trims_total")
    trim_s = metric_value(metrics, "bertkit_heap_trim_seconds_total")
    print(f"# serve load, {datetime.date.today()}, {machine()}, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"# all-MiniLM-L6-v2 /v1/embed, {args.clients} clients, 1-4 sentences per request, "
          f"server --threads {args.threads} --trim-interval {args.trim_interval:g}, {args.warmup:.0f} s warm-up, "
          f"{elapsed:.0f} s measured")
    print(f"requests           {len(latencies)}")
    print(f"requests/s         {len(latencies) / elapsed:.1f}")
    print(f"latency p50        {1000 * statistics.median(latencies):.1f} ms")
    print(f"latency p99        {1000 * latencies[int(0.99 * (len(latencies) - 1))]:.1f} ms")
    print(f"errors             {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(f"mean texts/call    {batch_mean(metrics):.1f}")
    print(f"heap trims         {trims:.0f} since start ({1000 * trim_s / max(trims, 1):.1f} ms each, "
          f"{100 * trim_s / (t1 - t_start):.1f}% of the time)")
    quarters = [sampler.between(points[i], points[i + 1]) for i in range(4)]
    print(f"server RSS (MB)    idle {rss_idle:.0f}, after warm-up {rss[0]:.0f}, at 25/50/75/100% "
          f"{rss[1]:.0f} / {rss[2]:.0f} / {rss[3]:.0f} / {rss[4]:.0f}")
    print("RSS per quarter    median (max): " + " | ".join(
        f"{statistics.median(q):.0f} ({max(q):.0f})" for q in quarters if q))
    drift = statistics.median(quarters[3]) - statistics.median(quarters[0])
    print(f"RSS drift          median of the last quarter - median of the first: {drift:+.0f} MB")


def one_text_seconds(base: str) -> float:
    """Latency of a one-text /v1/embed request (60 s at most)."""
    started = time.perf_counter()
    response = httpx.post(f"{base}/v1/embed", json={"texts": ["the next client waits for this answer"]}, timeout=60)
    response.raise_for_status()
    return time.perf_counter() - started


def maximum_size_body(max_texts: int, max_body_bytes: int) -> bytes:
    """``max_texts`` texts of corpus prose, as long as they can be while the JSON body fits the limit."""
    prose = " ".join(mixed_sentences(512))
    chars = max_body_bytes // max_texts
    while True:
        texts = [prose[(i * 997) % (len(prose) - chars):][:chars] for i in range(max_texts)]
        body = json.dumps({"texts": texts}).encode()
        if len(body) <= max_body_bytes:
            return body
        chars -= 1 + (len(body) - max_body_bytes) // max_texts


def abandon(base: str, body: bytes, count: int) -> dict[str, int]:
    """``count`` requests from 8 threads, each client giving up after 0.3 s; how each ended."""
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def send(_: int) -> None:
        try:
            status = str(httpx.post(f"{base}/v1/embed", content=body, timeout=httpx.Timeout(30, read=0.3),
                                    headers={"content-type": "application/json"}).status_code)
        except httpx.TimeoutException:
            status = "abandoned"
        with lock:
            outcomes[status] = outcomes.get(status, 0) + 1

    threads = [threading.Thread(target=lambda k=k: [send(i) for i in range(k, count, 8)]) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def wait_idle(base: str, seconds: float = 120) -> None:
    stop = time.monotonic() + seconds
    while metric_value(httpx.get(f"{base}/metrics").text, "bertkit_queued_texts") > 0:
        if time.monotonic() > stop:
            raise SystemExit(f"the server still held work {seconds:.0f} s after the round")
        time.sleep(0.2)


def summary(name: str, seconds: list[float]) -> str:
    return f"{name:<34} median {statistics.median(seconds):7.2f} s   max {max(seconds):7.2f} s"


def run_abandon(args: argparse.Namespace) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    body = maximum_size_body(args.max_texts, args.max_body_bytes)
    server = start_server(minilm_dir(), port, args.threads, args.trim_interval)
    idle, after, outcomes = [], [], {}
    try:
        one_text_seconds(base)
        for _ in range(args.rounds):  # idle and after-abandonment measurements interleaved
            idle.append(one_text_seconds(base))
            for status, n in abandon(base, body, args.abandoned).items():
                outcomes[status] = outcomes.get(status, 0) + n
            after.append(one_text_seconds(base))
            wait_idle(base)
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        server.terminate()
        server.wait(30)
    dropped = {reason: metric_value(metrics, f'bertkit_requests_dropped_total{{endpoint="embed",reason="{reason}"}}')
               for reason in ("queue_full", "disconnected", "deadline")}
    print(f"# serve abandonment, {datetime.date.today()}, {machine()}, load average {os.getloadavg()[0]:.1f} "
          "at the end")
    print(f"# all-MiniLM-L6-v2 /v1/embed, server --threads {args.threads} and default limits; per round "
          f"{args.abandoned} requests of {args.max_texts} texts ({len(body) / 1e6:.2f} MB each) from 8 threads, "
          f"clients giving up after 0.3 s; {args.rounds} rounds")
    print(summary("one text, idle server (reference)", idle))
    print(summary("one text, after the abandoned ones", after))
    print(f"ratio (medians)                    {statistics.median(after) / statistics.median(idle):.1f}x")
    late = sum(a >= 2 for a in after)
    print("goal: one text under 2 s           " + (f"NOT met in {late} of {len(after)} rounds" if late else
                                                    "met in every round"))
    print(f"abandoned requests ended           {dict(sorted(outcomes.items()))}")
    print(f"server dropped (requests)          {', '.join(f'{k} {v:.0f}' for k, v in dropped.items())}")
    calls = metric_value(metrics, 'bertkit_batch_size_count{endpoint="embed"}')
    print(f"model calls in all                 {calls:.0f}")


def half_request(port: int, kind: int) -> socket.socket:
    """A connection that sent half the headers (even ``kind``) or the headers and half the body (odd)."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = b"POST /v1/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    sock.sendall(head if kind % 2 == 0 else head + b'Content-Length: 400\r\n\r\n{"texts": ["half a')
    return sock


def seconds_until_closed(sock: socket.socket, started: float, limit: float) -> float:
    sock.settimeout(max(limit - (time.monotonic() - started), 0.01))
    try:
        while sock.recv(65536):
            pass
        return time.monotonic() - started
    except (TimeoutError, OSError):
        return float("inf")  # still open at the limit
    finally:
        sock.close()


def run_slow(args: argparse.Namespace) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(minilm_dir(), port, args.threads, args.trim_interval)
    closed, idle, held = [], [], []
    try:
        one_text_seconds(base)
        for _ in range(args.rounds):
            idle.append(one_text_seconds(base))
            started = time.monotonic()
            socks = [half_request(port, i) for i in range(args.slow_clients)]
            held.append(one_text_seconds(base))
            closed += [seconds_until_closed(sock, started, 60) for sock in socks]
    finally:
        server.terminate()
        server.wait(30)
    print(f"# serve slow clients, {datetime.date.today()}, {machine()}, load average {os.getloadavg()[0]:.1f} "
          "at the end")
    print(f"# all-MiniLM-L6-v2, server --threads {args.threads} and default limits (--read-timeout 10); per round "
          f"{args.slow_clients} connections sending half a request (half of them half the headers, half the body "
          f"cut short); {args.rounds} rounds")
    still_open = sum(c == float("inf") for c in closed)
    print(f"half-sent requests closed after    median {statistics.median(closed):.1f} s, max {max(closed):.1f} s "
          f"({still_open} of {len(closed)} still open after 60 s); goal: within 30 s")
    print(summary("one text, idle server (reference)", idle))
    print(summary("one text, while they hang", held))
    print(f"ratio (medians)                    {statistics.median(held) / statistics.median(idle):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("load", "abandon", "slow"), default="load")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of the same load before measuring")
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trim-interval", type=float, default=1.0,
                        help="the server's --trim-interval (negative: never return freed memory)")
    parser.add_argument("--abandoned", type=int, default=40, help="abandon mode: requests given up per round")
    parser.add_argument("--max-texts", type=int, default=256, help="abandon mode: the server's --max-texts")
    parser.add_argument("--max-body-bytes", type=int, default=2_000_000,
                        help="abandon mode: the server's --max-body-bytes")
    parser.add_argument("--slow-clients", type=int, default=200, help="slow mode: half-sent requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="abandon and slow modes")
    args = parser.parse_args()
    {"load": run_load, "abandon": run_abandon, "slow": run_slow}[args.mode](args)


if __name__ == "__main__":
    main()
