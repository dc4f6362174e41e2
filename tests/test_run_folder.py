"""A run folder under faults: kill -9 at any point resumes to the same losses, one process per folder, a damaged
newest checkpoint is skipped, a finished run is not re-run, and a failed first save can simply be started again."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bertkit.cli import main
from bertkit.tokenizer import Tokenizer
from bertkit.train import checkpointing as ckpt
from bertkit.train.logging import read_metrics
from bertkit.train.loop import Trainer

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
SRC = Path(__file__).resolve().parents[1] / "src"
DRIVER = Path(__file__).parent / "kill_points.py"
# A real BERT (the tiny preset) with every step logged, a checkpoint every 2 steps and rotation from step 6 on.
RUN = ["--preset", "tiny", "--batch-size", "8", "--lr", "1e-3", "--max-steps", "8", "--save-every", "2",
       "--keep-last", "2", "--log-every", "1", "--eval-every", "0", "--eval-holdout", "0", "--seed", "1",
       "--no-progress", "--no-plots"]
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run-folder")
    Tokenizer.train([str(CORPUS / "alice_in_wonderland.txt")], vocab_size=400).save_pretrained(root / "tok")
    assert main(["prepare", str(CORPUS / "alice_in_wonderland.txt"), "--tokenizer", str(root / "tok"), "--out",
                 str(root / "shards"), "--max-seq-len", "32"]) == 0
    return root / "shards"


def pretrain(point: str, step: int, shards: Path, out: Path, *extra: str, wait: bool = True):
    argv = [sys.executable, str(DRIVER), point, str(step), "--", "pretrain", "--data", str(shards), "--out",
            str(out), *RUN, *extra]
    process = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        process.communicate(timeout=300)
    return process


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    assert pretrain("none", 0, shards, out).returncode == 0
    return out


# The step of each kill is drawn at random (seeded, so a failure can be replayed) among those where it can happen.
KILLS = [("step", random.Random(1).randint(3, 8)), ("save", random.Random(2).choice([4, 6, 8])),
         ("rotation", random.Random(3).choice([6, 8]))]


@pytest.mark.parametrize(("point", "step"), KILLS, ids=[f"{p}-{s}" for p, s in KILLS])
def test_kill_9_anywhere_resumes_to_bit_identical_losses_and_weights(shards, uninterrupted, tmp_path, point, step):
    out = tmp_path / "run"
    killed = pretrain(point, step, shards, out)
    assert killed.returncode == -9, killed.stderr
    resumed = pretrain("none", 0, shards, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(out) == losses(uninterrupted) and len(losses(out)) == 8  # exactly equal, not approximately
    mine, reference = load_file(out / "model.safetensors"), load_file(uninterrupted / "model.safetensors")
    assert mine.keys() == reference.keys() and all(mine[k].equal(reference[k]) for k in mine)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # the dead process's leftovers were cleared


def test_a_second_process_is_refused_while_the_first_runs_and_the_first_is_unharmed(shards, tmp_path, capsys):
    out, go = tmp_path / "run", tmp_path / "go"
    first = subprocess.Popen([sys.executable, str(DRIVER), "pause", "3", "--", "pretrain", "--data", str(shards),
                              "--out", str(out), *RUN], env={**ENV, "BERTKIT_GO": str(go)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while [s for s, _ in ckpt.list_checkpoints(out)] != [2]:  # paused before step 3, checkpoint 2 written
            assert first.poll() is None and time.monotonic() < deadline, first.stderr and first.stderr.read()
            time.sleep(0.05)
        for extra in (["--resume"], []):
            assert main(["pretrain", "--data", str(shards), "--out", str(out), *RUN, *extra]) == 1
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"in use by process {first.pid}" in err
    finally:
        go.touch()
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert [s for s, _ in losses(out)] == list(range(1, 9))  # the first run's log is whole


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(shards, tmp_path, monkeypatch, caplog):
    args = ["pretrain", "--data", str(shards), *RUN, "--keep-last", "3"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    after_step = Trainer._after_step

    def stop_after_step_5(self):
        record = after_step(self)
        if self.step == 5:
            raise KeyboardInterrupt
        return record

    monkeypatch.setattr(Trainer, "_after_step", stop_after_step_5)
    assert main([*args, "--out", str(tmp_path / "cut")]) == 130
    monkeypatch.undo()
    newest = tmp_path / "cut" / "checkpoints" / "step-00000004"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a truncated file
    assert main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert f"{newest}: skipped, damaged (model.safetensors has" in caplog.text
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")


def test_a_checkpoint_with_a_changed_byte_fails_verification(tmp_path):
    def write(directory: Path) -> None:
        (directory / "a.bin").write_bytes(b"\0" * 64)
        (directory / ckpt.STATE_FILE).write_bytes(b"state")

    ckpt.write_dir_atomically(ckpt.checkpoint_path(tmp_path, 1), write)
    ckpt.write_dir_atomically(ckpt.checkpoint_path(tmp_path, 2), write)
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000002"
    (ckpt.checkpoint_path(tmp_path, 2) / "a.bin").write_bytes(b"\0" * 63 + b"\1")
    assert "a.bin does not match its checksum" in ckpt.verify_checkpoint(ckpt.checkpoint_path(tmp_path, 2))
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000001"
    (ckpt.checkpoint_path(tmp_path, 1) / ckpt.STATE_FILE).unlink()
    assert ckpt.latest_checkpoint(tmp_path) is None


def test_resuming_a_finished_run_says_so_and_exits_0(shards, uninterrupted, capsys, caplog):
    before = (uninterrupted / "metrics.jsonl").read_bytes()
    assert main(["pretrain", "--data", str(shards), "--out", str(uninterrupted), *RUN, "--resume"]) == 0
    assert "already finished (step 8); nothing to resume" in caplog.text
    assert "trained 8 steps" in capsys.readouterr().out
    assert (uninterrupted / "metrics.jsonl").read_bytes() == before


def test_a_failed_first_save_leaves_a_folder_that_can_be_started_again(shards, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"

    def disk_full(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(ckpt, "write_checkpoint_manifest", disk_full)  # only checkpoints fail
    assert main(["pretrain", "--data", str(shards), "--out", str(out), *RUN]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step-00000002: disk full" in err and "Traceback" not in err
    assert [s for s, _ in losses(out)] == [1, 2]
    monkeypatch.undo()
    assert main(["pretrain", "--data", str(shards), "--out", str(out), *RUN, "--resume"]) == 2  # nothing to resume
    assert "no complete checkpoint" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(shards), "--out", str(out), *RUN]) == 0
    assert [s for s, _ in losses(out)] == list(range(1, 9))  # a fresh log, not appended to the failed one


def test_stale_temporaries_of_live_processes_are_left_alone(tmp_path):
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        root = tmp_path / ckpt.CHECKPOINTS
        names = [f".tmp-step-00000004-{live.pid}", f".tmp-step-00000004-{dead_pid.pid}",
                 f".tmp-step-00000006-{os.getpid()}"]
        for name in names:
            (root / name).mkdir(parents=True)
        ckpt.remove_stale_temps(tmp_path)
        assert sorted(p.name for p in root.iterdir()) == [names[0]]
    finally:
        live.kill()
        live.wait()


def test_the_lock_names_its_holder_and_is_free_again_after_release(tmp_path):
    with ckpt.RunLock(tmp_path):
        assert (tmp_path / ckpt.LOCK_FILE).read_text().strip() == str(os.getpid())
        holder = subprocess.run([sys.executable, "-c", "import sys; from bertkit.train.checkpointing import RunLock; "
                                 "RunLock(sys.argv[1]).__enter__()", str(tmp_path)], env=ENV, capture_output=True,
                                text=True)
        assert holder.returncode != 0 and f"in use by process {os.getpid()}" in holder.stderr
    with ckpt.RunLock(tmp_path):
        pass
