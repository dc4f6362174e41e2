"""Shard round trip, size/checksum/offset validation and the tokenizer fingerprint check."""

import json

import numpy as np
import pytest

from bertkit.data.shards import ShardError, ShardSet, token_dtype, write_manifest, write_shard

VOCAB = 40_000  # > 2**15 so uint16 storage is exercised near its top


def _write_set(tmp_path, n_shards=2, per_shard=30, seed=0):
    rng = np.random.default_rng(seed)
    continuation = rng.random(VOCAB) < 0.3
    written, entries = [], []
    for k in range(n_shards):
        ids = [rng.integers(0, VOCAB, size=int(rng.integers(5, 40))).tolist() for _ in range(per_shard)]
        a_lens = [int(rng.integers(3, len(x) - 1)) for x in ids]
        nsp = rng.integers(0, 2, size=per_shard).tolist()
        entries.append(write_shard(str(tmp_path / f"shard_{k:05d}.bin"), ids, a_lens, nsp, continuation,
                                   token_dtype(VOCAB)))
        written.extend(zip(ids, a_lens, nsp, strict=True))
    tok = {"fingerprint": "ab" * 32, "vocab_size": VOCAB, "special_ids": [0, 1, 2, 3], "cls_id": 1, "sep_id": 2,
           "pad_id": 0, "mask_id": 3, "unk_id": 4}
    write_manifest(str(tmp_path), {"tokenizer": tok, "settings": {"max_seq_len": 40}, "shards": entries})
    return written, continuation


def test_round_trip_returns_every_instance(tmp_path):
    written, continuation = _write_set(tmp_path)
    shards = ShardSet(str(tmp_path), verify=True)
    assert len(shards) == len(written) and shards.dtype == np.uint16
    for i, (ids, a_len, nsp) in enumerate(written):
        got = shards[i]
        assert got.ids.tolist() == ids and got.a_len == a_len and got.nsp_label == nsp
        assert got.word_starts.tolist() == (~continuation[ids]).tolist()
    with pytest.raises(IndexError):
        shards[len(written)]
    assert not (tmp_path / "shard_00000.bin.tmp").exists()


def test_token_dtype_grows_with_vocab():
    assert token_dtype(30522) == np.uint16 and token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_truncated_shard_is_named(tmp_path):
    _write_set(tmp_path)
    path = tmp_path / "shard_00001.bin"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ShardError, match=r"shard_00001\.bin.*truncated"):
        ShardSet(str(tmp_path))


def test_corrupt_shard_fails_checksum_when_verified(tmp_path):
    _write_set(tmp_path)
    path = tmp_path / "shard_00000.bin"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the word-start bits: only the checksum can notice
    path.write_bytes(bytes(data))
    ShardSet(str(tmp_path))  # sizes still match
    with pytest.raises(ShardError, match=r"shard_00000\.bin.*sha256"):
        ShardSet(str(tmp_path), verify=True)


def test_corrupt_offsets_are_caught_on_first_read(tmp_path):
    _write_set(tmp_path)
    path = tmp_path / "shard_00000.bin"
    data = bytearray(path.read_bytes())
    data[8:16] = np.int64(10**9).tobytes()  # offsets[1]
    path.write_bytes(bytes(data))
    shards = ShardSet(str(tmp_path))
    with pytest.raises(ShardError, match=r"shard_00000\.bin.*offsets"):
        shards[0]


def test_missing_shard_and_missing_or_foreign_manifest(tmp_path):
    _write_set(tmp_path)
    (tmp_path / "shard_00001.bin").unlink()
    with pytest.raises(ShardError, match=r"shard_00001\.bin.*missing"):
        ShardSet(str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ShardError, match="version 99"):
        ShardSet(str(tmp_path))
    with pytest.raises(ShardError, match="no manifest"):
        ShardSet(str(tmp_path / "nowhere"))


def test_fingerprint_mismatch_is_refused(tmp_path):
    _write_set(tmp_path)
    shards = ShardSet(str(tmp_path))
    shards.check_fingerprint("ab" * 32)
    with pytest.raises(ShardError, match="tokenizer"):
        shards.check_fingerprint("cd" * 32)


def test_shard_set_pickles_without_memory_maps(tmp_path):
    import pickle

    _write_set(tmp_path)
    shards = ShardSet(str(tmp_path))
    first = shards[0].ids.tolist()
    clone = pickle.loads(pickle.dumps(shards))
    assert clone._maps == {} and clone[0].ids.tolist() == first
