"""The finetune / evaluate / predict commands: flags reach the library, outputs have the promised shape, and bad
input exits with status 2 and one line naming the cause, leaving existing files alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertkit.cli import main
from finetune_toys import make_pretrained, sentiment_rows, write_conll, write_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A classifier fine-tuned through the command line on CSV files with custom column names."""
    root = tmp_path_factory.mktemp("cli")
    pretrained = make_pretrained(root / "pretrained")
    rows = [{"review": r["text"], "stars": r["label"]} for r in sentiment_rows(96, 0)]
    train = root / "train.csv"
    train.write_text("review,stars\n" + "".join(f"{r['review']},{r['stars']}\n" for r in rows))
    dev = write_table(root / "dev.jsonl", [{"review": r["text"], "stars": r["label"]} for r in sentiment_rows(32, 1)])
    out = root / "model"
    code = main(["finetune", "--task", "classify", "--model", str(pretrained), "--train", str(train), "--dev",
                 str(dev), "--out", str(out), "--text-column", "review", "--label-column", "stars", "--epochs", "8",
                 "--batch-size", "16", "--lr", "3e-3", "--max-seq-len", "32", "--seed", "3", "--no-progress"])
    assert code == 0
    return {"root": root, "pretrained": pretrained, "train": train, "dev": dev, "out": out}


def test_finetune_writes_the_settings_and_a_loadable_model(trained):
    settings = json.loads((trained["out"] / "finetune.json").read_text())
    assert settings["task"] == "classify" and settings["lr"] == 3e-3 and settings["max_seq_len"] == 32
    assert settings["text_column"] == "review" and settings["seed"] == 3 and settings["epochs"] == 8
    config = json.loads((trained["out"] / "config.json").read_text())
    assert config["bertkit"]["text_column"] == "review" and config["id2label"] == {"0": "neg", "1": "pos"}


def test_evaluate_prints_json_on_the_last_line_and_writes_the_same_file(trained, capsys):
    target = trained["root"] / "metrics.json"
    assert main(["evaluate", "--model", str(trained["out"]), "--data", str(trained["dev"]), "--output",
                 str(target)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(target.read_text())
    assert set(printed) >= {"accuracy", "f1", "mcc", "loss"} and printed["examples"] == 32
    assert printed["accuracy"] > 0.8


def test_predict_writes_labels_and_probabilities(trained):
    texts = write_table(trained["root"] / "texts.jsonl", [{"review": "so good , nice film"}, {"review": "awful"}])
    output = trained["root"] / "predictions.jsonl"
    assert main(["predict", "--model", str(trained["out"]), "--input", str(texts), "--output", str(output)]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 2 and set(records[0]) == {"label", "probabilities"}
    assert set(records[0]["probabilities"]) == {"neg", "pos"}


def test_failed_predict_leaves_the_previous_output(trained, capsys):
    output = trained["root"] / "kept.jsonl"
    output.write_text("previous\n")
    bad = write_table(trained["root"] / "bad.jsonl", [{"text": "no review key"}])
    assert main(["predict", "--model", str(trained["out"]), "--input", str(bad), "--output", str(output)]) == 2
    assert "bad.jsonl:1: no key 'review'" in capsys.readouterr().err
    assert output.read_text() == "previous\n"


@pytest.mark.parametrize("case", ["unseen_label", "missing_column", "existing_out", "wrong_task", "bad_conll",
                                  "glue_without_data"])
def test_bad_input_exits_2_with_one_line_naming_the_cause(trained, case, capsys, tmp_path):
    base = ["finetune", "--model", str(trained["pretrained"]), "--out", str(tmp_path / "out"), "--max-steps", "1"]
    columns = ["--text-column", "review", "--label-column", "stars"]
    dev = write_table(tmp_path / "dev.jsonl", [{"review": "meh", "stars": "mixed"}])
    conll = tmp_path / "bad.conll"
    conll.write_text("alice B-PER\nparis\n")
    argv, expected = {
        "unseen_label": (base + ["--task", "classify", "--train", str(trained["train"]), "--dev", str(dev), *columns],
                         "dev.jsonl:1: label 'mixed' never seen in training"),
        "missing_column": (base + ["--task", "classify", "--train", str(trained["train"])],
                           "train.csv: no column 'text'"),
        "existing_out": (["finetune", "--task", "classify", "--model", str(trained["pretrained"]), "--train",
                          str(trained["train"]), "--out", str(trained["out"]), *columns],
                         "holds a previous 'classify' run"),
        "wrong_task": (["evaluate", "--model", str(trained["out"]), "--data", str(conll), "--glue", "stsb"],
                       "fine-tuned for task 'classify'; it cannot be used for task 'regress'"),
        "bad_conll": (base + ["--task", "tag", "--train", str(conll)], "bad.conll:2: expected a word and a tag"),
        "glue_without_data": (base + ["--glue", "sst2"], "--glue sst2 needs --data-dir"),
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_tagging_predictions_carry_character_spans(tmp_path):
    pretrained = make_pretrained(tmp_path / "pretrained")
    train = write_conll(tmp_path / "train.conll", 96, 0)
    out = tmp_path / "tagger"
    assert main(["finetune", "--task", "tag", "--model", str(pretrained), "--train", str(train), "--out", str(out),
                 "--epochs", "3", "--batch-size", "16", "--lr", "3e-3", "--max-seq-len", "32", "--no-progress"]) == 0
    texts = tmp_path / "texts.tsv"
    texts.write_text("text\ndave met oslo  the cast erin .\n")
    assert main(["predict", "--model", str(out), "--input", str(texts), "--output", str(tmp_path / "p.jsonl")]) == 0
    record = json.loads((tmp_path / "p.jsonl").read_text())
    spans = [(e["label"], record["text"][e["start"]:e["end"]]) for e in record["entities"]]
    assert spans == [("PER", "dave"), ("LOC", "oslo"), ("PER", "erin")]
