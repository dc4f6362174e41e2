"""The README's main job, exactly as a new user runs it: `bertkit demo` with no arguments, in an empty folder.

It takes minutes, so it is marked ``demo`` (`-m "not demo"` leaves it out while working); CI runs it. What it checks
is what the README promises: the files, the fill-mask table, and the held-out accuracy floor stated there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bertkit.cli import main
from bertkit.demo import MARKER, SENTENCES

ROOT = Path(__file__).resolve().parents[1]
FLOOR = re.compile(r"held-out MLM accuracy[^*\n]*at least \*\*(\d\.\d+)\*\*", re.IGNORECASE)
FILES = ("corpus.txt", "tokenizer/vocab.txt", "shards/manifest.json", "config.json", "model.safetensors",
         "vocab.txt", "metrics.jsonl", "pretrain.json", "report.html", "loss.png", MARKER)


def readme_accuracy_floor() -> float:
    found = FLOOR.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found, "README.md states no demo accuracy floor ('held-out MLM accuracy ... at least **0.NN**')"
    return float(found.group(1))


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory) -> tuple[Path, str]:
    """Runs `python -m bertkit demo` in a fresh folder; the run folder and what it printed."""
    cwd = tmp_path_factory.mktemp("user")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "bertkit", "demo"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=7200)  # a safety net against a hang, not a speed check
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd / "runs" / "demo", done.stdout


@pytest.mark.demo
def test_default_demo_writes_the_promised_files_and_reaches_the_readme_accuracy(default_demo):
    out, printed = default_demo
    for name in FILES:
        assert (out / name).is_file(), name
    summary = json.loads((out / MARKER).read_text(encoding="utf-8"))["summary"]
    floor = readme_accuracy_floor()
    assert summary["eval_mlm_accuracy"] >= floor, (summary["eval_mlm_accuracy"], floor)
    assert summary["eval_mlm_accuracy"] > summary["initial_eval"]["mlm_accuracy"] + 0.05
    shown = re.search(r"mlm_accuracy\s+[\d.]+ -> ([\d.]+)", printed)
    assert shown and float(shown.group(1)) == pytest.approx(summary["eval_mlm_accuracy"], abs=1e-4)


@pytest.mark.demo
def test_default_demo_prints_a_fill_mask_table_and_its_model_answers_the_suggested_command(default_demo, capsys):
    out, printed = default_demo
    result = json.loads((out / MARKER).read_text(encoding="utf-8"))
    for sentence, before, after in zip(SENTENCES, result["before"], result["after"], strict=True):
        assert len(before) == len(after) == 5, sentence
        assert f"  {sentence}\n    before: {' '.join(before)}\n    after:  {' '.join(after)}" in printed
    suggested = re.search(r'try:\s+bertkit fill-mask "([^"]+)" --model (\S+)', printed)
    assert suggested and (out.parents[1] / suggested.group(2)).resolve() == out.resolve()  # relative to the run's cwd
    capsys.readouterr()
    assert main(["fill-mask", suggested.group(1), "--model", str(out)]) == 0
    assert result["after"][0][0] in capsys.readouterr().out  # the saved model answers as the table said
