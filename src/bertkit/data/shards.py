"""Compact binary shards of pretraining instances, a manifest, and a memory-mapped reader.

A shard set is a folder::

    manifest.json        format version, sentence objective, tokenizer fingerprint and special ids, counts,
                         settings, one entry per shard
    shard_00000.bin      one file per shard, no header; sections at offsets derived from the manifest counts:
        offsets      int64   (n + 1,)  instance i is tokens[offsets[i]:offsets[i + 1]]
        a_lens       int32   (n,)      length of "[CLS] A [SEP]": positions < a_len have token type 0
        tokens       uint16 or uint32 (n_tokens,), the smallest type that holds every id of the vocabulary
        nsp          uint8   (n,)      the sentence label of the manifest's objective: "nsp" 0 = IsNext,
                                       1 = NotNext; "sop" 0 = in order, 1 = swapped; "none" always 0
        word_starts  bits    (ceil(n_tokens / 8),), np.packbits of "this token starts a word" (for whole-word masking)

Readers never load a shard: each file is memory-mapped once and instances are sliced on demand, so a set larger
than RAM can be trained on. Every file's size is checked against the manifest on open (cheap, always), and its
sha256 on request, so a truncated or damaged file fails loudly with its name instead of feeding garbage to training.

Every objective uses the same layout, so the objective lives only in the manifest (``"objective"``; a manifest
written before objectives existed is "nsp").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.files import atomic_write, write_json

FORMAT = "bertkit-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
OBJECTIVES = ("nsp", "sop", "none")  # next-sentence prediction, sentence-order prediction, masked-LM alone


class ShardError(ValueError):
    """A shard set that is missing, truncated, corrupt or built for another tokenizer."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32: halves the size of typical BERT shards."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _layout(n: int, n_tokens: int, dtype: np.dtype) -> tuple[dict[str, tuple[int, np.dtype, int]], int]:
    """Byte offset, dtype and length of every section, and the total file size."""
    sections = [
        ("offsets", np.dtype(np.int64), n + 1),
        ("a_lens", np.dtype(np.int32), n),
        ("tokens", dtype, n_tokens),
        ("nsp", np.dtype(np.uint8), n),
        ("word_starts", np.dtype(np.uint8), (n_tokens + 7) // 8),
    ]
    layout, position = {}, 0
    for name, section_dtype, count in sections:
        layout[name] = (position, section_dtype, count)
        position += section_dtype.itemsize * count
    return layout, position


def write_shard(
    path: str,
    ids: Sequence[Sequence[int]],
    a_lens: Sequence[int],
    labels: Sequence[int],
    continuation: np.ndarray,
    dtype: np.dtype,
) -> dict[str, Any]:
    """Write one shard atomically (temp file, then rename) and return its manifest entry.

    Args:
        ids: per instance, the full token ids (``[CLS] A [SEP] B [SEP]`` or ``<s> ... </s>``).
        a_lens, labels: per instance, see the module docstring (``labels`` fill the ``nsp`` section).
        continuation: bool (vocab_size,), the tokenizer's ``continuation_mask`` (True for pieces inside a word);
            a token starts a word when it is not one.
        dtype: token dtype of the whole set (:func:`token_dtype`).
    """
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(offsets[-1]))
    arrays = {
        "offsets": offsets,
        "a_lens": np.asarray(a_lens, dtype=np.int32),
        "tokens": tokens.astype(dtype),
        "nsp": np.asarray(labels, dtype=np.uint8),
        "word_starts": np.packbits(~continuation[tokens]),
    }
    layout, size = _layout(len(ids), len(tokens), dtype)
    digest = hashlib.sha256()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            for name, (_, section_dtype, _) in layout.items():
                data = np.ascontiguousarray(arrays[name], dtype=section_dtype).tobytes()
                digest.update(data)
                f.write(data)

    atomic_write(path, write)
    return {
        "file": os.path.basename(path),
        "instances": len(ids),
        "tokens": len(tokens),
        "bytes": size,
        "sha256": digest.hexdigest(),
    }


def write_manifest(out_dir: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` atomically and return it with its format fields; the manifest is what marks a
    folder as a finished shard set."""
    path = os.path.join(out_dir, MANIFEST)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    write_json(path, manifest)
    return manifest


def read_manifest(shard_dir: str) -> dict[str, Any]:
    path = os.path.join(shard_dir, MANIFEST)
    if os.path.isfile(shard_dir):
        raise ShardError(f"{shard_dir}: a file, but a shard set is a folder (written by `bertkit prepare`)")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ShardError(f"{path}: no manifest; is {shard_dir!r} a shard set written by prepare?") from None
    except json.JSONDecodeError as err:
        raise ShardError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise ShardError(f"{path}: not UTF-8 text") from None
    if not isinstance(manifest, dict):
        raise ShardError(f"{path}: a JSON object expected")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}, "
            f"expected {FORMAT!r} version {FORMAT_VERSION}"
        )
    return manifest


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredInstance:
    """One instance read back from a shard; arrays are views into the memory map (copy before writing)."""

    ids: np.ndarray  # (L,) token ids including [CLS]/[SEP]
    a_len: int
    nsp_label: int  # the sentence label of the set's objective (fed to the model as ``nsp_labels``)
    word_starts: np.ndarray  # (L,) bool


class ShardSet:
    """Random access to every instance of a shard set, memory-mapped.

    Args:
        shard_dir: folder holding ``manifest.json`` and the shard files.
        verify: also compare every file's sha256 with the manifest (reads the whole set once).

    Raises:
        ShardError: naming the file that is missing, truncated or corrupt.
    """

    def __init__(self, shard_dir: str, verify: bool = False):
        self.shard_dir = shard_dir
        self.manifest = read_manifest(shard_dir)
        self.objective: str = self.manifest.get("objective", "nsp")
        self.max_seq_len: int = self.manifest["settings"]["max_seq_len"]
        self.arch: str = self.manifest["settings"].get("arch", "bert")  # the architecture the set was prepared for
        if self.objective not in OBJECTIVES:
            raise ShardError(f"{os.path.join(shard_dir, MANIFEST)}: unknown objective {self.objective!r}; "
                             f"expected one of {', '.join(OBJECTIVES)}")
        tok = self.manifest["tokenizer"]
        self.fingerprint: str = tok["fingerprint"]
        self.vocab_size: int = tok["vocab_size"]
        self.cls_id: int = tok["cls_id"]
        self.sep_id: int = tok["sep_id"]
        self.pad_id: int = tok["pad_id"]
        self.mask_id: int = tok["mask_id"]
        self.special_ids: tuple[int, ...] = tuple(tok["special_ids"])
        self.dtype = token_dtype(self.vocab_size)
        self._entries = self.manifest["shards"]
        for entry in self._entries:
            self._check_file(entry, verify)
        self._ends = np.cumsum([e["instances"] for e in self._entries], dtype=np.int64)
        self._maps: dict[int, dict[str, np.ndarray]] = {}

    def _check_file(self, entry: dict[str, Any], verify: bool) -> None:
        path = os.path.join(self.shard_dir, entry["file"])
        if not os.path.isfile(path):
            raise ShardError(f"{path}: shard listed in the manifest is missing")
        _, expected = _layout(entry["instances"], entry["tokens"], self.dtype)
        actual = os.path.getsize(path)
        if actual != expected or entry["bytes"] != expected:
            raise ShardError(f"{path}: shard is truncated or damaged: {actual} bytes, manifest implies {expected}")
        if verify and file_sha256(path) != entry["sha256"]:
            raise ShardError(f"{path}: shard is corrupt: sha256 does not match the manifest")

    def check_fingerprint(self, expected: str) -> None:
        """Refuse a model whose tokenizer differs from the one that wrote these shards (ids would mean other words)."""
        if expected != self.fingerprint:
            raise ShardError(
                f"{self.shard_dir}: shards were written with tokenizer {self.fingerprint[:12]}..., "
                f"but the model's tokenizer is {expected[:12]}...; re-run prepare with the model's tokenizer"
            )

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def _sections(self, shard: int) -> dict[str, np.ndarray]:
        if shard not in self._maps:
            entry = self._entries[shard]
            path = os.path.join(self.shard_dir, entry["file"])
            raw = np.memmap(path, dtype=np.uint8, mode="r")
            layout, _ = _layout(entry["instances"], entry["tokens"], self.dtype)
            sections = {
                name: raw[start : start + dtype.itemsize * count].view(dtype)
                for name, (start, dtype, count) in layout.items()
            }
            offsets = sections["offsets"]
            if offsets[0] != 0 or offsets[-1] != entry["tokens"] or np.any(np.diff(offsets) <= 0):
                raise ShardError(f"{path}: shard is corrupt: instance offsets are inconsistent")
            self._maps[shard] = sections
        return self._maps[shard]

    def __getitem__(self, index: int) -> StoredInstance:
        if not 0 <= index < len(self):
            raise IndexError(f"instance {index} out of range for a shard set of {len(self)}")
        shard = int(np.searchsorted(self._ends, index, side="right"))
        local = index - (int(self._ends[shard - 1]) if shard else 0)
        s = self._sections(shard)
        start, end = int(s["offsets"][local]), int(s["offsets"][local + 1])
        bits = np.unpackbits(s["word_starts"][start // 8 : (end + 7) // 8])
        first = start % 8
        return StoredInstance(
            ids=s["tokens"][start:end],
            a_len=int(s["a_lens"][local]),
            nsp_label=int(s["nsp"][local]),
            word_starts=bits[first : first + end - start].astype(bool),
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the memory maps (worker processes re-open them lazily)."""
        return {**self.__dict__, "_maps": {}}
