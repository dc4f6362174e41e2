"""A time-budgeted run (TrainConfig.max_minutes), driven by a fake clock: no test waits on real time."""

import math

import pytest

from bertkit.train.checkpointing import CheckpointError
from bertkit.train.logging import read_metrics
from bertkit.train.loop import BudgetError, TrainConfig, Trainer
from bertkit.train.optim import lr_factor_at
from train_toys import ToyRegressor, ToySource, save_state_dict, toy_config

LR = 0.05


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class TimedSource(ToySource):
    """Toy batches, each taking ``seconds`` on the fake clock; ``fail_at`` (an index) simulates a crash."""

    def __init__(self, clock: FakeClock, seconds: float, fail_at: int | None = None) -> None:
        super().__init__()
        self.clock, self.seconds, self.fail_at, self.read = clock, seconds, fail_at, 0

    def batch(self, epoch, index):
        if self.read == self.fail_at:
            raise KeyboardInterrupt("simulated crash")
        self.read += 1
        self.clock.now += self.seconds
        return super().batch(epoch, index)


def budgeted(out_dir, clock, *, seconds=6.0, minutes=1.0, evaluate=None, fail_at=None, **overrides):
    config = toy_config(out_dir, **{"max_steps": None, "max_minutes": minutes, "warmup_steps": None,
                                    "warmup_ratio": 0.2, **overrides})
    return Trainer(ToyRegressor(), config, TimedSource(clock, seconds, fail_at), evaluate=evaluate,
                   save_model=save_state_dict, clock=clock)


def lrs(out_dir):
    return [r["lr"] for r in read_metrics(out_dir / "metrics.jsonl") if "lr" in r]


def test_the_budget_alone_ends_the_run_and_the_schedule_follows_its_elapsed_fraction(tmp_path):
    summary = budgeted(tmp_path, FakeClock()).fit()  # 6 s a step, 60 s budget: 10 steps
    assert summary["step"] == 10 and summary["train_seconds"] == pytest.approx(60.0)
    expected = [LR * lr_factor_at(step / 10, warmup_share=0.2) for step in range(10)]
    assert lrs(tmp_path) == pytest.approx(expected)
    assert expected[1] == pytest.approx(LR / 2) and expected[2] == pytest.approx(LR)  # warm-up, then the peak
    assert expected[-1] == pytest.approx(LR * 0.125)  # decays towards 0 at the end of the budget
    assert (tmp_path / "model.pt").is_file()


def test_evaluation_and_checkpoints_do_not_spend_the_budget(tmp_path):
    clock = FakeClock()

    def slow_evaluate(model):
        clock.now += 100.0  # longer than the whole budget
        return {"loss": 1.0}

    summary = budgeted(tmp_path, clock, evaluate=slow_evaluate, eval_every=2, save_every=3).fit()
    assert summary["step"] == 10 and summary["train_seconds"] == pytest.approx(60.0)
    evaluated = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if "eval_loss" in r]
    assert evaluated == [2, 4, 6, 8, 10]  # the end of the budget is evaluated, like the last step


def test_with_max_steps_too_whichever_comes_first_ends_the_run_and_the_schedule(tmp_path):
    summary = budgeted(tmp_path / "steps", FakeClock(), max_steps=4).fit()
    assert summary["step"] == 4
    assert lrs(tmp_path / "steps")[-1] == pytest.approx(LR * lr_factor_at(3 / 4, warmup_share=0.2))
    summary = budgeted(tmp_path / "budget", FakeClock(), max_steps=1000).fit()
    assert summary["step"] == 10


def test_resume_continues_the_same_budget_with_the_same_schedule(tmp_path):
    whole = tmp_path / "whole"
    budgeted(whole, FakeClock(), save_every=3).fit()
    parts = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        budgeted(parts, FakeClock(), save_every=3, fail_at=5).fit()  # crashes in step 6; checkpoint at step 3
    restarted = FakeClock(start=5000.0)  # a new process: its clock has nothing to do with the first one's
    summary = budgeted(parts, restarted, save_every=3, resume=True).fit()
    assert summary["step"] == 10 and summary["train_seconds"] == pytest.approx(60.0)
    assert lrs(parts) == pytest.approx(lrs(whole))


def test_resuming_a_run_without_a_budget_with_one_is_refused(tmp_path):
    Trainer(ToyRegressor(), toy_config(tmp_path, max_steps=4, save_every=2), ToySource(),
            save_model=save_state_dict).fit()
    with pytest.raises(CheckpointError, match="not started with a time budget"):
        budgeted(tmp_path, FakeClock(), resume=True).fit()


def test_a_budget_shorter_than_one_step_writes_no_model(tmp_path):
    with pytest.raises(BudgetError, match=r"max_minutes=0.05 is shorter than one training step \(6.0 s\)"):
        budgeted(tmp_path, FakeClock(), minutes=0.05, save_every=1).fit()
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("minutes", [0, -1.0, math.nan, math.inf, "5", True])
def test_config_rejects_a_budget_that_is_not_a_positive_number(tmp_path, minutes):
    with pytest.raises(ValueError, match="max_minutes must be a positive number of minutes"):
        TrainConfig(out_dir=tmp_path, max_minutes=minutes)


def test_budget_schedule_is_warm_up_then_decay_over_the_fraction():
    assert lr_factor_at(0.0, warmup_share=0.1) == 0.0
    assert lr_factor_at(0.05, warmup_share=0.1) == pytest.approx(0.5)
    assert lr_factor_at(0.1, warmup_share=0.1) == pytest.approx(1.0)
    assert lr_factor_at(0.55, warmup_share=0.1) == pytest.approx(0.5)
    assert lr_factor_at(1.0, warmup_share=0.1) == 0.0 and lr_factor_at(1.7, warmup_share=0.1) == 0.0
    assert lr_factor_at(0.55, warmup_share=0.1, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor_at(0.3, warmup_share=0.0, schedule="constant") == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_factor_at(0.3, warmup_share=0.1, schedule="step")
