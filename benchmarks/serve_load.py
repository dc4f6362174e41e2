"""Load test of ``bertkit serve`` on loopback: N concurrent clients on /v1/embed for a bounded time.

Starts the server as a subprocess on a free 127.0.0.1 port, warms it up, then runs the clients until the
time or request budget is spent. Reports requests/s, p50/p99 latency, errors (should be 0), the server's
model-call batch sizes, and its resident memory (RSS), sampled every second: at several points of the run
and as the median (and peak) of each quarter of it. The drift of those medians is ~0 when RSS is flat
and keeps climbing while memory accumulates.

    python benchmarks/serve_load.py [--clients 8] [--seconds 60] [--max-requests 20000] [--threads 2]
                                    [--trim-interval 1.0]   (negative: the server never trims its heap)
"""

from __future__ import annotations

import argparse
import datetime
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
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of the same load before measuring")
    parser.add_argument("--max-requests", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trim-interval", type=float, default=1.0,
                        help="the server's --trim-interval (negative: never return freed memory)")
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
