"""`bertkit demo`: the offline end-to-end run, shrunk to seconds; its corpus; its folder safety."""

import json

import pytest

from bertkit.cli import main
from bertkit.demo import MARKER, DemoSettings, python_docs_corpus, run_demo

QUICK = ["--preset", "tiny", "--steps", "40", "--vocab-size", "1000", "--max-corpus-chars", "120000",
         "--batch-size", "16", "--max-seq-len", "64"]


def test_demo_runs_end_to_end_and_shows_learning(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *QUICK]) == 0
    printed = capsys.readouterr().out
    assert printed.count("before:") == printed.count("after:") == 4
    for name in ("corpus.txt", "tokenizer/vocab.txt", "shards/manifest.json", "config.json", "model.safetensors",
                 "vocab.txt", "metrics.jsonl", "report.html", "loss.png", MARKER):
        assert (out / name).is_file(), name
    summary = json.loads((out / MARKER).read_text())["summary"]
    assert summary["eval_mlm_accuracy"] > summary["initial_eval"]["mlm_accuracy"] + 0.02
    assert str(out / "metrics.jsonl") in printed


def test_demo_replaces_a_previous_demo_but_never_another_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo"):
        run_demo(DemoSettings(out_dir=str(foreign)))
    assert (foreign / "notes.txt").read_text() == "keep me"
    previous = tmp_path / "demo"
    previous.mkdir()
    (previous / MARKER).write_text("{}")
    (previous / "stale.txt").write_text("old")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(python_docs_corpus_text(60_000), encoding="utf-8")
    run_demo(DemoSettings(out_dir=str(previous), corpus=[str(corpus)], preset="tiny", steps=2, vocab_size=500,
                          batch_size=8, max_seq_len=32), echo=lambda line: None)
    assert not (previous / "stale.txt").exists() and (previous / "model.safetensors").is_file()


def python_docs_corpus_text(max_chars):
    return "\n\n".join(python_docs_corpus(max_chars)) + "\n"


def test_builtin_corpus_is_deterministic_documentation_text():
    first = python_docs_corpus(700_000)  # past the pydoc topics, into standard-library docstrings
    assert first == python_docs_corpus(700_000)
    assert len(first) > 100 and sum(map(len, first)) >= 700_000
    assert all("\n\n" not in doc and doc.count("\n") >= 1 for doc in first)
    assert any("Return" in doc for doc in first[-20:])  # module docstrings, not only reference topics
