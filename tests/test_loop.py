import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bertkit.train.checkpointing import CheckpointError, list_checkpoints, load_trainer_state
from bertkit.train.logging import read_metrics
from bertkit.train.loop import Phase, TrainConfig, Trainer
from train_toys import ToyRegressor, ToySource, held_out_loss, save_state_dict, toy_config

TOYS = Path(__file__).with_name("train_toys.py")


def _fit(out_dir, model=None, source=None, **overrides):
    trainer = Trainer(model or ToyRegressor(), toy_config(out_dir, **overrides), source or ToySource(),
                      save_model=save_state_dict)
    return trainer, trainer.fit()


def _losses(out_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(out_dir / "metrics.jsonl") if "loss" in r]


def _learns(out_dir, **overrides):
    """Held-out loss after 60 steps is well below that of the untrained model."""
    model = ToyRegressor()
    with torch.no_grad():
        before = held_out_loss(model.eval())["loss"]
    trainer = Trainer(model, toy_config(out_dir, max_steps=60, **overrides), ToySource(),
                      evaluate=held_out_loss, save_model=save_state_dict)
    summary = trainer.fit()
    assert summary["eval_loss"] < 0.2 * before, (summary["eval_loss"], before)
    return summary


def test_toy_model_learns_and_metrics_have_the_documented_fields(tmp_path):
    summary = _learns(tmp_path)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 61))
    assert {"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed"} <= set(records[0])
    last = records[-1]
    assert last == {"step": 60, "eval_loss": summary["eval_loss"], "duration": last["duration"],
                    "elapsed": last["elapsed"]}
    assert 0 < last["duration"] < last["elapsed"]
    assert summary["step"] == 60 and summary["loss"] == records[-2]["loss"]
    assert (tmp_path / "model.pt").is_file()


@pytest.mark.parametrize("overrides", [dict(optimizer="lamb", lr=0.05), dict(precision="bf16"), dict(precision="fp16")])
def test_lamb_bf16_and_fp16_with_grad_scaler_also_learn(tmp_path, overrides):
    _learns(tmp_path, **overrides)


def test_logged_loss_is_the_window_mean_and_lr_follows_the_schedule(tmp_path):
    _fit(tmp_path / "every", max_steps=8)
    _fit(tmp_path / "window", max_steps=8, log_every=4)
    every = [loss for _, loss in _losses(tmp_path / "every")]
    window = read_metrics(tmp_path / "window" / "metrics.jsonl")
    assert [r["step"] for r in window] == [4, 8]
    assert window[1]["loss"] == pytest.approx(sum(every[4:]) / 4, rel=1e-6)
    # warmup 2, total 8: update index 7 (step 8) has factor (8 - 7) / 6
    assert window[1]["lr"] == pytest.approx(0.05 / 6)


class Halves:
    """Micro-batch i is half (i % 2) of ``source``'s batch i // 2: accumulation must equal the big batch."""

    def __init__(self, source: ToySource) -> None:
        self.source = source

    def num_batches(self, epoch):
        return 2 * self.source.num_batches(epoch)

    def batch(self, epoch, index):
        full = self.source.batch(epoch, index // 2)
        rows = slice(index % 2 * 4, index % 2 * 4 + 4)
        return {k: v[rows] for k, v in full.items()}


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    big, _ = _fit(tmp_path / "big", model=ToyRegressor(dropout=0.0), source=ToySource(batch_size=8),
                  max_steps=10)
    accum, _ = _fit(tmp_path / "accum", model=ToyRegressor(dropout=0.0), source=Halves(ToySource(batch_size=8)),
                    max_steps=10, grad_accum=2)
    for a, b in zip(big.raw_model.parameters(), accum.raw_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    big_losses, accum_losses = _losses(tmp_path / "big"), _losses(tmp_path / "accum")
    assert [loss for _, loss in big_losses] == pytest.approx([loss for _, loss in accum_losses], abs=1e-6)


def test_epochs_derive_max_steps_and_advance_the_epoch(tmp_path):
    trainer, summary = _fit(tmp_path, max_steps=None, epochs=3, grad_accum=2)
    assert trainer.max_steps == 3 * 8 // 2 == summary["step"]
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")][3:5] == [0, 1]


class Recording(ToySource):
    def __init__(self, tag, seen, **kwargs):
        super().__init__(**kwargs)
        self.tag, self.seen = tag, seen

    def batch(self, epoch, index):
        self.seen.append((self.tag, epoch, index))
        return super().batch(epoch, index)


def test_phases_run_in_order_with_their_own_accumulation_and_fresh_data_position(tmp_path):
    seen = []
    phases = [Phase("short", Recording("a", seen, batches=3), steps=2),
              Phase("long", Recording("b", seen, batches=3), steps=2, grad_accum=2)]
    trainer = Trainer(ToyRegressor(), toy_config(tmp_path, max_steps=None), None, save_model=save_state_dict,
                      phases=phases)
    assert trainer.fit()["step"] == 4
    assert seen == [("a", 0, 0), ("a", 0, 1), ("b", 0, 0), ("b", 0, 1), ("b", 0, 2), ("b", 1, 0)]


def test_evaluation_lines_and_best_checkpoint(tmp_path):
    scores = iter([0.1, 0.5, 0.3, 0.2])
    trainer = Trainer(ToyRegressor(), toy_config(tmp_path, max_steps=8, eval_every=2),
                      ToySource(), evaluate=lambda model: {"score": next(scores), "n": 3},
                      save_model=save_state_dict, best_metric="score")
    summary = trainer.fit()
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval_score" in r]
    assert [(r["step"], r["eval_score"]) for r in evals] == [(2, 0.1), (4, 0.5), (6, 0.3), (8, 0.2)]
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == 4
    assert (tmp_path / "best" / "model.pt").is_file()
    assert (summary["best_value"], summary["best_step"], summary["eval_score"]) == (0.5, 4, 0.2)


def test_unknown_best_metric_is_a_clear_error(tmp_path):
    trainer = Trainer(ToyRegressor(), toy_config(tmp_path, max_steps=2, eval_every=1), ToySource(),
                      evaluate=lambda model: {"acc": 1.0}, save_model=save_state_dict, best_metric="f1")
    with pytest.raises(KeyError, match="best_metric 'f1'.*'acc'"):
        trainer.fit()


def test_checkpoints_rotate_and_hold_trainer_state(tmp_path):
    _fit(tmp_path, max_steps=10, save_every=3, keep_last=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [9, 10]
    state = load_trainer_state(list_checkpoints(tmp_path)[0][1])
    assert state["step"] == 9 and state["position"] == {"phase": 0, "epoch": 1, "index": 1}
    assert {"optimizer", "scaler", "model", "rng", "config", "window"} <= set(state)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_failed_checkpoint_write_leaves_the_previous_one_intact(tmp_path):
    calls = []

    def flaky_save(model, path):
        calls.append(path)
        if len(calls) == 2:
            torch.save({}, path / "partial.pt")
            raise OSError("disk full")
        save_state_dict(model, path)

    trainer = Trainer(ToyRegressor(), toy_config(tmp_path, max_steps=10, save_every=3), ToySource(),
                      save_model=flaky_save)
    with pytest.raises(CheckpointError, match="step-00000006.*disk full"):
        trainer.fit()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3]
    assert load_trainer_state(list_checkpoints(tmp_path)[0][1])["step"] == 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000003"]


def test_fresh_run_refuses_an_out_dir_with_a_previous_run(tmp_path):
    _fit(tmp_path, max_steps=4, save_every=2)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(FileExistsError, match="resume=True"):
        _fit(tmp_path, max_steps=4, save_every=2)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        _fit(tmp_path, max_steps=4, resume=True)


def test_missing_loss_or_attention_mask_are_clear_errors(tmp_path):
    class NoLabels(ToySource):
        def batch(self, epoch, index):
            return {k: v for k, v in super().batch(epoch, index).items() if k != "y"}

    class NoMask(ToySource):
        def batch(self, epoch, index):
            return {k: v for k, v in super().batch(epoch, index).items() if k != "attention_mask"}

    with pytest.raises(ValueError, match="loss=None"):
        _fit(tmp_path / "a", source=NoLabels())
    with pytest.raises(KeyError, match="attention_mask"):
        _fit(tmp_path / "b", source=NoMask())


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="TrainConfig.precision"):
        TrainConfig(out_dir="x", precision="fp8")
    with pytest.raises(ValueError, match="TrainConfig.grad_accum"):
        TrainConfig(out_dir="x", grad_accum=0)


def test_resume_after_kill_9_reproduces_the_uninterrupted_loss_sequence(tmp_path):
    """A real SIGKILL mid-run (after the step-10 checkpoint), then resume: same losses as one clean run."""
    killed = tmp_path / "killed"
    script = [sys.executable, str(TOYS), str(killed), "--steps", "30", "--save-every", "10"]
    proc = subprocess.Popen([*script, "--delay", "0.03"])
    try:
        reference = tmp_path / "reference"
        torch.set_num_threads(1)
        _fit(reference, model=ToyRegressor(dropout=0.2), max_steps=30, save_every=10, grad_accum=2)
        deadline = time.monotonic() + 60
        while _last_step(killed) < 14 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    interrupted_at = _last_step(killed)
    assert 10 < interrupted_at < 30
    subprocess.run([*script, "--resume"], check=True, timeout=120)
    expected, got = _losses(reference), _losses(killed)
    assert [s for s, _ in got] == list(range(1, 31))
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in expected], abs=1e-6)
    ref_model, resumed_model = (torch.load(d / "model.pt") for d in (reference, killed))
    for name, value in ref_model.items():
        torch.testing.assert_close(resumed_model[name], value, rtol=0, atol=1e-6)


def _last_step(out_dir: Path) -> int:
    path = out_dir / "metrics.jsonl"
    return max((r["step"] for r in read_metrics(path)), default=0) if path.exists() else 0


class FixedPretrainingBatches:
    """Two fixed MLM + NSP batches for a tiny BERT to memorise."""

    def __init__(self, vocab_size: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.batches = []
        for _ in range(2):
            ids = torch.randint(5, vocab_size, (4, 12), generator=generator)
            mask = torch.ones_like(ids)
            mask[:2, 9:] = 0
            labels = torch.where(torch.rand(ids.shape, generator=generator) < 0.3, ids, -100)
            labels[:, 0] = ids[:, 0]  # at least one prediction per row
            self.batches.append({
                "input_ids": ids, "token_type_ids": (torch.arange(12) >= 6).long().expand(4, 12),
                "attention_mask": mask, "mlm_labels": labels.masked_fill(mask == 0, -100),
                "nsp_labels": torch.randint(0, 2, (4,), generator=generator),
            })

    def num_batches(self, epoch):
        return len(self.batches)

    def batch(self, epoch, index):
        return self.batches[index]


def test_tiny_bert_pretraining_learns_and_saves_in_the_standard_layout(tmp_path):
    from bertkit import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig.preset("tiny", hidden_size=32, num_attention_heads=2, intermediate_size=64,
                               vocab_size=40, max_position_embeddings=16)
    model = BertForPreTraining(config)
    train_config = TrainConfig(out_dir=tmp_path, max_steps=40, lr=1e-2, warmup_steps=4, log_every=1,
                               save_every=20, progress=False)
    trainer = Trainer(model, train_config, FixedPretrainingBatches(config.vocab_size))
    trainer.fit()
    losses = [loss for _, loss in _losses(tmp_path)]
    assert sum(losses[-4:]) / 4 < 0.25 * sum(losses[:4]) / 4
    reloaded = BertForPreTraining.from_pretrained(tmp_path)
    for name, value in trainer.raw_model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], value)
    assert (tmp_path / "checkpoints" / "step-00000020" / "config.json").is_file()
