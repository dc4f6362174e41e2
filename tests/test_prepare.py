"""prepare(): corpus -> shard set, end to end with a tokenizer trained on the fixture corpus."""

import os
from pathlib import Path

import numpy as np
import pytest

from bertkit.data.prepare import prepare
from bertkit.data.shards import ShardSet
from bertkit.tokenizer import Tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "corpus"
SMALL = {"max_seq_len": 64, "chunk_chars": 40_000}  # several shards from the ~200 KB fixture corpus


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    Tokenizer.train(sorted(str(p) for p in FIXTURES.glob("*.txt")), vocab_size=1500).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def reference(tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "shards"
    return out, prepare([str(FIXTURES)], tokenizer_dir, str(out), seed=1, **SMALL)


def _checksums(manifest):
    return [s["sha256"] for s in manifest["shards"]]


def test_shards_hold_valid_instances(reference, tokenizer_dir):
    out, manifest = reference
    tok = Tokenizer.from_pretrained(tokenizer_dir)
    shards = ShardSet(str(out), verify=True)
    shards.check_fingerprint(tok.fingerprint())
    counts = manifest["counts"]
    assert len(manifest["shards"]) >= 3 and len(shards) == counts["instances"] > 300
    assert counts["files"] == 4 and counts["skipped_files"] == 0 and counts["documents"] > 100
    assert 0.4 < counts["not_next"] / counts["instances"] < 0.6
    assert sum(len(shards[i].ids) for i in range(len(shards))) == counts["tokens"]
    for i in range(0, len(shards), 7):
        x = shards[i]
        assert len(x.ids) <= 64 and x.ids[0] == tok.cls_id and x.ids[x.a_len - 1] == x.ids[-1] == tok.sep_id
        assert x.word_starts.tolist() == (~tok.continuation_mask[x.ids]).tolist()
    assert sorted(os.listdir(out)) == sorted(["manifest.json", "tokenizer_config.json", "vocab.txt",
                                              *(s["file"] for s in manifest["shards"])])


def test_same_seed_same_bytes_other_seed_differs(reference, tokenizer_dir, tmp_path):
    _, manifest = reference
    again = prepare([str(FIXTURES)], tokenizer_dir, str(tmp_path / "a"), seed=1, **SMALL)
    assert again == manifest
    other = prepare([str(FIXTURES)], tokenizer_dir, str(tmp_path / "b"), seed=2, **SMALL)
    assert _checksums(other) != _checksums(manifest)


def test_two_workers_repeat_and_match_one_worker(reference, tokenizer_dir, tmp_path):
    _, manifest = reference
    first = prepare([str(FIXTURES)], tokenizer_dir, str(tmp_path / "w1"), seed=1, workers=2, **SMALL)
    second = prepare([str(FIXTURES)], tokenizer_dir, str(tmp_path / "w2"), seed=1, workers=2, **SMALL)
    assert _checksums(first) == _checksums(second) == _checksums(manifest)


def test_non_utf8_file_is_skipped_and_counted(tokenizer_dir, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text((FIXTURES / "alice_in_wonderland.txt").read_text()[:20_000])
    (corpus / "latin1.txt").write_bytes("Caf\u00e9 cr\u00e8me.\n".encode("latin-1"))
    manifest = prepare([str(corpus)], tokenizer_dir, str(tmp_path / "out"), **SMALL)
    assert manifest["counts"]["files"] == 1 and manifest["counts"]["skipped_files"] == 1
    assert manifest["skipped_paths"] == [str(corpus / "latin1.txt")]


def test_empty_corpus_is_an_error_and_leaves_nothing(tokenizer_dir, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="empty corpus"):
        prepare([str(corpus)], tokenizer_dir, str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == ["corpus"]


def test_failed_run_leaves_nothing_half_written(tokenizer_dir, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "Fine."}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        prepare([str(tmp_path / "bad.jsonl")], tokenizer_dir, str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl"]


def test_refuses_foreign_folder_but_replaces_previous_shard_set(tokenizer_dir, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a shard set"):
        prepare([str(FIXTURES)], tokenizer_dir, str(foreign), **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "shards"
    prepare([str(FIXTURES / "alice_in_wonderland.txt")], tokenizer_dir, str(out), seed=3, **SMALL)
    manifest = prepare([str(FIXTURES / "tale_of_two_cities.txt")], tokenizer_dir, str(out), seed=3, **SMALL)
    assert ShardSet(str(out)).manifest == manifest
    assert sorted(os.listdir(tmp_path)) == ["mine", "shards"]


def test_jsonl_documents_are_read(tokenizer_dir, tmp_path):
    manifest = prepare([str(FIXTURES / "frankenstein.jsonl")], tokenizer_dir, str(tmp_path / "out"), **SMALL)
    assert manifest["counts"]["documents"] == 10 and manifest["counts"]["instances"] > 20
    assert np.isclose(manifest["settings"]["short_seq_prob"], 0.1)
