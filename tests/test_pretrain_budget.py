"""Budgeted pretraining and the masking / objective options, through run_pretraining and the command line.

Time is faked: ``bertkit.train.loop.time`` is replaced by a clock that advances one second per reading, and a
training step reads it twice, so each step takes exactly one second of training time.
"""

import json
from pathlib import Path

import pytest
import torch

from bertkit import BertConfig
from bertkit.cli import main
from bertkit.data.shards import ShardError, ShardSet
from bertkit.recipes.pretrain import (
    BUDGET_RECIPE,
    PAPER_RECIPE,
    PretrainSettings,
    build_model,
    make_sources,
    run_pretraining,
    set_dropout,
)
from bertkit.tokenizer import Tokenizer
from bertkit.train import loop
from bertkit.train.distributed import DistInfo
from bertkit.train.logging import read_metrics

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


class TickingTime:
    """Stands in for the ``time`` module in the loop: each ``perf_counter()`` reading is ``step`` seconds later."""

    def __init__(self, step: float = 1.0) -> None:
        self.now, self.step = 0.0, step

    def perf_counter(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("budget")
    Tokenizer.train(sorted(str(p) for p in CORPUS.glob("*.txt")), vocab_size=1000).save_pretrained(root / "tok")
    out = root / "shards"
    assert main(["prepare", str(CORPUS), "--tokenizer", str(root / "tok"), "--out", str(out),
                 "--max-seq-len", "48"]) == 0  # BERT pairs with NSP labels, as `bertkit prepare` writes by default
    return out


def quick(shards: Path, out: Path, **overrides) -> PretrainSettings:
    values = dict(data=str(shards), out_dir=str(out), preset="tiny", batch_size=8, log_every=1, eval_every=0,
                  save_every=0, eval_holdout=32, progress=False, plots=False)
    return PretrainSettings(**{**values, **overrides})


def test_unset_settings_take_the_budget_recipe_with_a_budget_and_the_paper_recipe_without(shards, tmp_path):
    budgeted = PretrainSettings(data=str(shards), out_dir=str(tmp_path), max_minutes=5)
    assert {k: getattr(budgeted, k) for k in BUDGET_RECIPE} == BUDGET_RECIPE and budgeted.max_steps is None
    paper = PretrainSettings(data=str(shards), out_dir=str(tmp_path))
    assert {k: getattr(paper, k) for k in PAPER_RECIPE} == PAPER_RECIPE and paper.max_steps == 10_000
    given = PretrainSettings(data=str(shards), out_dir=str(tmp_path), max_minutes=5, lr=3e-4, sentence_task=True,
                             dropout=0.1, max_steps=7)
    assert (given.lr, given.sentence_task, given.dropout, given.max_steps) == (3e-4, True, 0.1, 7)
    assert given.batch_size == BUDGET_RECIPE["batch_size"]


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(max_minutes=0), "max_minutes must be a positive number"),
    (dict(max_minutes=-2.0), "max_minutes must be a positive number"),
    (dict(max_minutes=float("nan")), "max_minutes must be a positive number"),
    (dict(mlm_prob=0.0), "mlm_prob must be in"),
    (dict(mlm_prob=1.0), "mlm_prob must be in"),
    (dict(dropout=1.0), "dropout must be in"),
    (dict(max_minutes=5, phase2_data="x", phase2_steps=3), "give max_steps with a time budget"),
])
def test_bad_budget_masking_and_dropout_values_are_refused(shards, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        quick(shards, tmp_path, **overrides)


def test_a_budgeted_run_trains_until_the_budget_is_spent_then_evaluates_and_saves(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "time", TickingTime())
    out = tmp_path / "run"
    summary = run_pretraining(quick(shards, out, max_minutes=0.1))  # 6 s: six one-second steps
    assert summary["step"] == 6 and summary["train_seconds"] == pytest.approx(6.0)
    assert "eval_mlm_accuracy" in summary and "eval_nsp_accuracy" not in summary  # the recipe drops NSP
    assert (out / "model.safetensors").is_file()
    lrs = [r["lr"] for r in read_metrics(out / "metrics.jsonl") if "lr" in r]
    assert len(lrs) == 6 and lrs[-1] < max(lrs)  # warmed up, then decayed within the budget
    recorded = json.loads((out / "pretrain.json").read_text())["settings"]
    assert recorded["max_minutes"] == 0.1 and recorded["lr"] == BUDGET_RECIPE["lr"]


def test_without_the_sentence_task_nsp_shards_train_masked_lm_only(shards, tmp_path):
    settings = quick(shards, tmp_path, max_steps=2, sentence_task=False)
    train, evaluation = make_sources(settings, ShardSet(settings.data), None, DistInfo.single())
    assert "nsp_labels" not in train[0].train.batch(0, 0) and "nsp_labels" not in evaluation.batch(0, 0)
    summary = run_pretraining(settings)
    assert summary["step"] == 2 and not any(k.startswith("eval_nsp") for k in summary)


def test_a_model_without_a_sentence_head_still_refuses_pair_shards(shards, tmp_path):
    with pytest.raises(ShardError, match="objective 'nsp'"):
        run_pretraining(quick(shards, tmp_path, arch="roberta", max_steps=2, sentence_task=False))


def test_dropout_setting_changes_training_only_and_the_saved_config_keeps_its_rates(shards, tmp_path):
    settings = quick(shards, tmp_path / "run", max_steps=2, dropout=0.0)
    model = build_model(settings, ShardSet(settings.data))
    set_dropout(model, 0.0)
    model.train()
    ids = torch.randint(5, 900, (2, 16))
    with torch.no_grad():
        assert torch.equal(model(ids).mlm_logits, model(ids).mlm_logits)  # no dropout noise while training
    run_pretraining(settings)
    config = BertConfig.from_json_file(tmp_path / "run" / "config.json")
    assert config.hidden_dropout_prob == config.attention_probs_dropout_prob == 0.1


def test_masking_rate_and_whole_words_reach_the_training_batches(shards, tmp_path):
    def masked_share(**overrides):
        settings = quick(shards, tmp_path, max_steps=2, **overrides)
        train, evaluation = make_sources(settings, ShardSet(str(shards)), None, DistInfo.single())

        def share(source):
            batch = source.batch(0, 0)
            return ((batch["mlm_labels"] != -100).sum() / batch["attention_mask"].sum()).item()
        return share(train[0].train), share(evaluation)

    train15, eval15 = masked_share(mlm_prob=0.15)
    train30, eval30 = masked_share(mlm_prob=0.30, whole_word=True)
    assert train30 > 1.6 * train15
    assert eval30 == eval15  # evaluation keeps its fixed 15% masking whatever the run trains with


# ------------------------------------------------------------------------------------------- command line
def test_cli_budget_alone_runs_the_budget_recipe(shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "time", TickingTime())
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(shards), "--out", str(out), "--preset", "tiny", "--max-minutes", "0.05",
                 "--eval-holdout", "32", "--no-progress", "--no-plots"]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    recorded = json.loads((out / "pretrain.json").read_text())["settings"]
    assert {k: recorded[k] for k in BUDGET_RECIPE} == BUDGET_RECIPE


@pytest.mark.parametrize("minutes", ["0", "-1", "ten", "nan"])
def test_cli_rejects_a_budget_that_is_not_a_positive_number(shards, tmp_path, capsys, minutes):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--data", str(shards), "--out", str(tmp_path / "x"), "--max-minutes", minutes])
    assert exit_info.value.code == 2
    assert "--max-minutes" in capsys.readouterr().err.splitlines()[-1]


def test_cli_budget_on_resume_of_an_unbudgeted_run_is_a_one_line_error(shards, tmp_path, capsys):
    args = ["pretrain", "--data", str(shards), "--out", str(tmp_path), "--preset", "tiny", "--batch-size", "8",
            "--max-steps", "2", "--save-every", "2", "--eval-holdout", "32", "--no-progress", "--no-plots"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--resume", "--max-minutes", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "started without a time budget" in err


def test_cli_budget_too_short_for_one_step_writes_no_model(shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "time", TickingTime(step=30.0))  # a step takes 30 s
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(shards), "--out", str(out), "--preset", "tiny", "--max-minutes", "0.5",
                 "--batch-size", "8", "--eval-holdout", "32", "--no-progress", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shorter than one training step" in err
    assert not any(out.glob("*.safetensors")) and not (out / "metrics.jsonl").exists()
    assert not (out / "pretrain.json").exists()
