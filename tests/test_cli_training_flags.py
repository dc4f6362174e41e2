"""Every training command takes every shared training flag, under the same name, with its recipe's default."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from bertkit.cli import build_parser
from bertkit.recipes.distill import DistillSettings
from bertkit.recipes.finetune import FinetuneSettings
from bertkit.recipes.pretrain import PretrainSettings
from bertkit.recipes.training import TRAINING_FIELDS, TrainingSettings

COMMANDS = {"pretrain": PretrainSettings, "distill": DistillSettings, "finetune": FinetuneSettings}


def subparser(command: str) -> argparse.ArgumentParser:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_training_command_has_every_training_flag_with_the_settings_default(command):
    settings_class = COMMANDS[command]
    assert issubclass(settings_class, TrainingSettings)
    flags = {a.dest: a for a in subparser(command)._actions}
    defaults = {f.name: f.default for f in dataclasses.fields(settings_class)}
    for name in TRAINING_FIELDS:
        assert name in flags, f"bertkit {command} has no flag for {name}"
        assert flags[name].default == defaults[name], name
        expected = "--no-progress" if name == "progress" else "--" + name.replace("_", "-")
        assert expected in flags[name].option_strings


def test_the_shared_flags_reach_the_settings_and_the_loop(tmp_path):
    args = build_parser().parse_args([
        "finetune", "--model", "m", "--out", str(tmp_path / "out"), "--task", "classify", "--train", "t.csv",
        "--optimizer", "lamb", "--max-grad-norm", "0.5", "--keep-last", "3", "--compile", "--no-progress",
    ])  # fmt: skip
    from bertkit.cli.common import training_values

    settings = FinetuneSettings(model="m", out=tmp_path / "out", task="classify", train="t.csv",
                                **training_values(args))
    config = settings.train_config(settings.out, epochs=settings.epochs, log_every=1, eval_every=0, save_every=0)
    assert (config.optimizer, config.max_grad_norm, config.keep_last, config.compile, config.progress) == (
        "lamb", 0.5, 3, True, False)
    assert (config.seed, config.lr, config.warmup_ratio) == (42, 3e-5, 0.1)  # fine-tuning's own defaults


def test_old_flag_spellings_keep_working():
    args = build_parser().parse_args(["distill", "--teacher", "t", "--data", "s", "--out", "o", "--steps", "7"])
    assert (args.max_steps, args.shards) == (7, "s")


@pytest.mark.parametrize("command", ["pretrain", "distill"])
def test_both_masked_lm_recipes_take_the_masking_flags(command):
    args = ["--teacher", "t", "--shards", "s"] if command == "distill" else ["--data", "s"]
    parsed = build_parser().parse_args([command, *args, "--out", "o", "--mlm-prob", "0.3", "--whole-word-mask"])
    assert (parsed.mlm_prob, parsed.whole_word) == (0.3, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, *args, "--out", "o", "--mlm-prob", "1.5"])
