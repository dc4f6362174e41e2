"""`bertkit prepare` / `pretrain` from the command line: resume, errors, and two processes under torchrun."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bertkit.cli import main
from bertkit.tokenizer import Tokenizer
from bertkit.train.logging import read_metrics
from bertkit.train.loop import Trainer

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
TRAIN = ["--preset", "tiny", "--batch-size", "8", "--lr", "1e-3", "--log-every", "1", "--eval-every", "3",
         "--eval-holdout", "32", "--no-progress", "--no-plots"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    Tokenizer.train(sorted(str(p) for p in CORPUS.glob("*.txt")), vocab_size=1000).save_pretrained(root / "tok")
    out = root / "shards"
    assert main(["prepare", str(CORPUS), "--tokenizer", str(root / "tok"), "--out", str(out),
                 "--max-seq-len", "48", "--seed", "3"]) == 0
    return out


def test_prepare_writes_a_shard_set_carrying_its_tokenizer(shards):
    assert (shards / "manifest.json").is_file() and (shards / "vocab.txt").is_file()
    original = Tokenizer.from_pretrained(shards.parent / "tok")
    assert Tokenizer.from_pretrained(shards).fingerprint() == original.fingerprint()


def test_resumed_run_logs_the_same_metrics_as_an_uninterrupted_one(shards, tmp_path, monkeypatch):
    args = ["pretrain", "--data", str(shards), *TRAIN, "--max-steps", "6", "--save-every", "3", "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0

    after_step = Trainer._after_step

    def interrupt_after_step_4(self):
        record = after_step(self)
        if self.step == 4:
            raise KeyboardInterrupt
        return record

    monkeypatch.setattr(Trainer, "_after_step", interrupt_after_step_4)
    assert main([*args, "--out", str(tmp_path / "cut")]) == 130
    monkeypatch.undo()
    assert max(r["step"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")) == 4
    assert main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0

    def comparable(run):
        return [{k: v for k, v in r.items() if k not in ("elapsed", "tokens_per_s", "duration")}
                for r in read_metrics(tmp_path / run / "metrics.jsonl")]

    whole, resumed = comparable("whole"), comparable("cut")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole] and len(whole) == 8  # 6 steps + 2 evals
    for a, b in zip(whole, resumed, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)


def test_bad_flags_and_foreign_models_are_one_line_errors(shards, tmp_path, capsys):
    assert main(["pretrain", "--data", str(shards), "--out", str(tmp_path / "a"), "--preset", "tiny",
                 "--init-from", str(tmp_path)]) == 2
    assert "--init-from" in capsys.readouterr().err
    other = tmp_path / "other"
    Tokenizer.train([str(CORPUS / "alice_in_wonderland.txt")], vocab_size=300).save_pretrained(other)
    assert main(["pretrain", "--data", str(shards), "--out", str(tmp_path / "b"), *TRAIN,
                 "--tokenizer", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tokenizer" in err
    assert not (tmp_path / "b" / "metrics.jsonl").exists()


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not built")
def test_torchrun_two_gloo_processes_train_and_only_rank_0_writes(shards, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "bertkit", "pretrain", "--data", str(shards), "--out", str(out), *TRAIN,
               "--max-steps", "3", "--save-every", "3"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("trained 3 steps") == 1  # rank 0 alone reports
    for name in ("config.json", "model.safetensors", "vocab.txt", "metrics.jsonl", "pretrain.json"):
        assert (out / name).is_file(), name
    state = torch.load(out / "checkpoints" / "step-00000003" / "trainer_state.pt", weights_only=True)
    assert len(state["rng"]) == 2  # written by a two-process job
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3]
