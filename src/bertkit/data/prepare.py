"""Raw text -> shard set: the offline half of the pretraining data pipeline.

The architecture (``arch``) decides the sentence objective (:data:`~bertkit.data.pretraining.ARCH_OBJECTIVES`):
NSP pairs for BERT, sentence-order pairs for ALBERT, packed full sentences without a sentence task for RoBERTa and
DistilBERT. The manifest records it, and ``pretrain`` refuses shards made for another objective.

The corpus is streamed (:mod:`bertkit.data.corpus`) and cut into chunks of about ``chunk_chars`` characters of
whole documents. A chunk is the unit of everything downstream: it is tokenized and turned into instances by one
worker process, with an rng seeded from ``(seed, chunk index)``, and written as one shard. Hence:

* memory is bounded: the reader holds one chunk, at most ``2 * workers`` chunks are in flight, and each worker holds
  one chunk and its instances, so peak RSS depends on ``chunk_chars`` and ``workers``, not on the corpus size;
* the output is a pure function of (corpus, tokenizer, settings, seed): the same for any number of workers;
* NotNext segments are drawn from the other documents of the same chunk, the bounded window
  :func:`~bertkit.data.pretraining.make_instances` expects; full-sentence packing crosses document boundaries
  within a chunk, and each chunk's last sequence may be short.

Everything is written into a temporary sibling folder that is renamed to ``out_dir`` only when complete, so a failed
run leaves nothing half-written, and an existing folder is only replaced when it is itself a shard set.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bertkit.data.corpus import CorpusStats, iter_documents
from bertkit.data.pretraining import Instance, make_instances, make_sop_instances, objective_for, pack_full_sentences
from bertkit.data.shards import MANIFEST, token_dtype, write_manifest, write_shard
from bertkit.tokenizer import Tokenizer


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that determines the instances (recorded in the manifest)."""

    max_seq_len: int = 128
    seed: int = 0
    short_seq_prob: float = 0.1
    dupe_factor: int = 1
    chunk_chars: int = 2_000_000
    text_field: str = "text"
    arch: str = "bert"

    @property
    def objective(self) -> str:
        """The sentence objective ``arch`` implies; ValueError naming the choices for an unknown arch."""
        return objective_for(self.arch)


# The manifest count of label-1 instances, per objective with sentence labels.
LABEL_COUNTS = {"nsp": "not_next", "sop": "swapped"}


class _ChunkWorker:
    """Tokenizes one chunk of documents, makes its instances and writes its shard; lives in a worker process."""

    def __init__(self, tokenizer_dir: str, out_dir: str, settings: PrepareSettings):
        self.tok = Tokenizer.from_pretrained(tokenizer_dir)
        self.out_dir, self.settings = out_dir, settings
        self.dtype = token_dtype(self.tok.vocab_size)
        self.continuation = np.asarray(self.tok.continuation_mask, dtype=bool)

    def __call__(self, index: int, documents: list[list[str]]) -> dict[str, Any]:
        s = self.settings
        # A document's later sentences keep the space that preceded them in the text: byte-level BPE encodes it
        # in the next word's token ("Ġword"), exactly as when the whole text is encoded; other schemes drop it.
        flat = self.tok.tokenize_ids([f" {sentence}" if i else sentence for doc in documents
                                      for i, sentence in enumerate(doc)])
        tokenized, start = [], 0
        for doc in documents:
            sentences = [ids for ids in flat[start : start + len(doc)] if ids]
            start += len(doc)
            if sentences:
                tokenized.append(sentences)
        instances = self._instances(tokenized, np.random.default_rng([s.seed, index]))
        result: dict[str, Any] = {"index": index, "shard": None, "label_ones": 0}
        if instances:
            path = os.path.join(self.out_dir, f"shard_{index:05d}.bin")
            ids = [x.ids for x in instances]
            labels = [x.label for x in instances]
            a_lens = [x.a_len for x in instances]
            result["shard"] = write_shard(path, ids, a_lens, labels, self.continuation, self.dtype)
            result["label_ones"] = sum(labels)
        return result

    def _instances(self, tokenized: list[list[list[int]]], rng: np.random.Generator) -> list[Instance]:
        """The chunk's instances for the objective; ``dupe_factor`` passes, each split differently."""
        s, cls_id, sep_id = self.settings, self.tok.cls_id, self.tok.sep_id
        if s.objective == "none":
            return pack_full_sentences(tokenized, s.max_seq_len, cls_id=cls_id, sep_id=sep_id)
        if s.objective == "sop":
            return [
                instance
                for _ in range(s.dupe_factor)
                for document in tokenized
                for instance in make_sop_instances(document, rng, s.max_seq_len, s.short_seq_prob,
                                                   cls_id=cls_id, sep_id=sep_id)
            ]  # fmt: skip
        return [
            instance
            for _ in range(s.dupe_factor)
            for d in range(len(tokenized))
            for instance in make_instances(tokenized, d, rng, s.max_seq_len, s.short_seq_prob,
                                           cls_id=cls_id, sep_id=sep_id)
        ]  # fmt: skip


_WORKER: _ChunkWorker | None = None


def _init_worker(tokenizer_dir: str, out_dir: str, settings: PrepareSettings) -> None:
    global _WORKER
    # Parallelism comes from the worker processes; the tokenizer library's own thread pool in each of them would
    # only oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER = _ChunkWorker(tokenizer_dir, out_dir, settings)


def _run_chunk(index: int, documents: list[list[str]]) -> dict[str, Any]:
    assert _WORKER is not None, "worker process was not initialised"
    return _WORKER(index, documents)


def _chunks(documents: Iterable[list[str]], chunk_chars: int) -> Iterator[tuple[int, list[list[str]]]]:
    """Group whole documents into numbered chunks of at least ``chunk_chars`` characters (the last may be smaller)."""
    chunk: list[list[str]] = []
    size, index = 0, 0
    for doc in documents:
        chunk.append(doc)
        size += sum(len(s) for s in doc)
        if size >= chunk_chars:
            yield index, chunk
            chunk, size, index = [], 0, index + 1
    if chunk:
        yield index, chunk


def _run_serial(chunks: Iterable[tuple[int, list[list[str]]]], worker_args: tuple) -> Iterator[dict[str, Any]]:
    worker = _ChunkWorker(*worker_args)
    for index, documents in chunks:
        yield worker(index, documents)


def _run_parallel(
    chunks: Iterable[tuple[int, list[list[str]]]], worker_args: tuple, workers: int
) -> Iterator[dict[str, Any]]:
    """Deal chunks to ``workers`` processes with at most ``2 * workers`` in flight (so the reader cannot run ahead)."""
    # A fork server, not plain fork: forking a process that already runs threads (the tokenizer library's, torch's)
    # can deadlock. It imports this module once; every worker is then a cheap fork of that clean process.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=worker_args) as pool:
        pending: set[Future] = set()
        for index, documents in chunks:
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
            pending.add(pool.submit(_run_chunk, index, documents))
        for future in pending:
            yield future.result()


def _check_out_dir(out_dir: str) -> None:
    """Refuse to replace a non-empty folder unless it is a previous shard set (never destroy other data)."""
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.isfile(os.path.join(out_dir, MANIFEST)):
        raise FileExistsError(f"{out_dir}: output folder exists, is not empty and is not a shard set; refusing")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir}: output path exists and is not a folder")


def _publish(tmp_dir: str, out_dir: str) -> None:
    """Move the finished set into place; a previous set is moved aside first and deleted only afterwards."""
    old = f"{out_dir}.old-{os.getpid()}"
    if os.path.isdir(out_dir):
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def prepare(
    inputs: list[str],
    tokenizer_dir: str,
    out_dir: str,
    *,
    max_seq_len: int = 128,
    workers: int = 1,
    seed: int = 0,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
    chunk_chars: int = 2_000_000,
    text_field: str = "text",
    arch: str = "bert",
    strict: bool = False,
) -> dict[str, Any]:
    """Build a shard set from text files and return its manifest.

    Args:
        inputs: ``.txt`` / ``.jsonl`` files, folders or glob patterns.
        tokenizer_dir: folder accepted by ``Tokenizer.from_pretrained`` (any tokenizer kind).
        out_dir: the shard set to create; replaced only if it already is a shard set.
        workers: processes; the output does not depend on it.
        dupe_factor: passes over each chunk, each with a different random split (as BERT's ``dupe_factor``); pairs
            only, since packed full sentences would repeat identically.
        chunk_chars: characters of text per chunk = per shard = per NotNext window.
        arch: "bert" (NSP pairs), "albert" (SOP pairs), "roberta" or "distilbert" (packed full sentences).
        short_seq_prob: pairs only; packed sequences are always filled.
        strict: refuse a file that is not UTF-8 text instead of skipping it with a warning.

    Raises:
        ValueError: bad settings, or the corpus holds no document or yields no instance.
        FileExistsError: ``out_dir`` holds something that is not a shard set.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    settings = PrepareSettings(max_seq_len=max_seq_len, seed=seed, short_seq_prob=short_seq_prob,
                               dupe_factor=dupe_factor, chunk_chars=chunk_chars, text_field=text_field, arch=arch)
    if settings.objective == "none" and dupe_factor != 1:
        raise ValueError(f"dupe_factor={dupe_factor}: arch {arch!r} packs full sentences without randomness, so "
                         "extra passes would only repeat the same sequences (masking is already fresh each epoch)")
    _check_out_dir(out_dir)
    tok = Tokenizer.from_pretrained(tokenizer_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f".{os.path.basename(os.path.abspath(out_dir))}.tmp-{os.getpid()}")
    os.makedirs(tmp_dir)
    try:
        stats = CorpusStats()
        chunks = _chunks(iter_documents(inputs, text_field=text_field, stats=stats, strict=strict), chunk_chars)
        args = (tokenizer_dir, tmp_dir, settings)
        run = _run_serial(chunks, args) if workers == 1 else _run_parallel(chunks, args, workers)
        results = sorted(run, key=lambda r: r["index"])
        manifest = write_manifest(tmp_dir, _manifest(tok, settings, stats, results, inputs))
        tok.save_pretrained(tmp_dir)  # the set carries its tokenizer, so a run can copy it beside the model
        _publish(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return manifest


def _manifest(
    tok: Tokenizer, settings: PrepareSettings, stats: CorpusStats, results: list[dict[str, Any]], inputs: list[str]
) -> dict[str, Any]:
    if stats.documents == 0:
        raise ValueError(
            f"empty corpus: no document found in {inputs} ({stats.files} files read, {len(stats.skipped)} skipped "
            "as binary or non-UTF-8)"
        )
    shards = [r["shard"] for r in results if r["shard"] is not None]
    if not shards:
        raise ValueError(f"corpus {inputs} yields no instance (documents too short for max_seq_len?)")
    specials = {name: getattr(tok, name) for name in ("cls_id", "sep_id", "pad_id", "mask_id", "unk_id")}
    label_counts = {}
    if settings.objective in LABEL_COUNTS:
        label_counts[LABEL_COUNTS[settings.objective]] = sum(r["label_ones"] for r in results)
    return {
        "objective": settings.objective,
        "tokenizer": {
            "fingerprint": tok.fingerprint(),
            "vocab_size": tok.vocab_size,
            "special_ids": sorted(tok.special_ids),
            **specials,
        },
        "counts": {
            "files": stats.files,
            "bytes": stats.bytes,
            "skipped_files": len(stats.skipped),
            "documents": stats.documents,
            "sentences": stats.sentences,
            "instances": sum(s["instances"] for s in shards),
            **label_counts,
            "tokens": sum(s["tokens"] for s in shards),
        },
        "skipped_paths": stats.skipped,
        "settings": asdict(settings),
        "shards": shards,
    }
