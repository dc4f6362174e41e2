"""Fine-tuning end to end on tiny synthetic tasks (tests/finetune_toys.py).

Each family learns (training loss falls, dev metric well above chance), the output directory is a complete model
that loads in one call and in transformers with equal logits, the kept model is the best one on dev, and bad input
or a clashing output directory fails with a message naming the cause.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from bertkit.recipes import finetune as finetune_module
from bertkit.recipes.finetune import FinetuneSettings, evaluate_model, predict, run_finetune
from bertkit.tasks import families
from bertkit.tasks.batches import TaskBatches
from bertkit.tasks.models import load_task_model
from bertkit.tasks.models import run_on_features as infer
from bertkit.tasks.readers import TaskDataError
from bertkit.train.logging import read_metrics
from finetune_toys import (
    make_pretrained,
    pair_rows,
    score_rows,
    sentiment_rows,
    write_conll,
    write_squad,
    write_table,
)

# task: (dev metric, chance level, threshold the tiny model must reach)
LEARNS = {
    "classify": ("accuracy", 0.5, 0.9),
    "pair": ("accuracy", 0.5, 0.75),
    "regress": ("spearman", 0.0, 0.8),
    "tag": ("f1", 0.0, 0.8),
    "qa": ("f1", 1 / 6, 0.6),
}
FAST = dict(batch_size=16, lr=3e-3, save_every=0, progress=False, eval_batch_size=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    return make_pretrained(tmp_path_factory.mktemp("pretrained"))


def task_data(task: str, folder: Path) -> dict:
    """Train / dev files and the settings a family needs."""
    folder.mkdir(parents=True, exist_ok=True)
    if task == "tag":
        return dict(train=write_conll(folder / "train.conll", 96, 0), dev=write_conll(folder / "dev.conll", 48, 1),
                    max_seq_len=32, epochs=3)
    if task == "qa":
        return dict(train=write_squad(folder / "train.json", 160, 0), dev=write_squad(folder / "dev.json", 48, 1),
                    max_seq_len=48, doc_stride=16, max_query_len=12, epochs=3)
    rows = {"classify": sentiment_rows, "pair": pair_rows, "regress": score_rows}[task]
    train, dev = write_table(folder / "train.jsonl", rows(160, 0)), write_table(folder / "dev.tsv", rows(64, 1))
    pair = "pair" if task == "pair" else None
    return dict(train=train, dev=dev, pair_column=pair, max_seq_len=32, epochs=6 if task == "regress" else 10)


@pytest.fixture(scope="module")
def runs(pretrained, tmp_path_factory) -> dict[str, tuple[FinetuneSettings, dict]]:
    """One fine-tune per family, shared by the tests below."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for task in LEARNS:
        data = task_data(task, root / "data" / task)
        settings = FinetuneSettings(model=pretrained, out=root / task, task=task, **data, **FAST)
        out[task] = (settings, run_finetune(settings))
    return out


@pytest.mark.parametrize("task", list(LEARNS))
def test_each_family_learns_loss_falls_and_dev_metric_beats_chance(runs, task):
    settings, summary = runs[task]
    metric, chance, threshold = LEARNS[task]
    losses = [r["loss"] for r in read_metrics(settings.out / "metrics.jsonl") if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    assert summary["metric"] == metric
    assert summary["best_value"] >= threshold > chance
    assert summary["dev"][metric] == summary["best_value"]


def test_final_model_is_the_best_dev_checkpoint(runs):
    settings, summary = runs["pair"]
    evals = [r["eval_accuracy"] for r in read_metrics(settings.out / "metrics.jsonl") if "eval_accuracy" in r]
    assert len(evals) == settings.epochs and summary["best_value"] == max(evals)
    best = json.loads((settings.out / "best.json").read_text())
    assert best["step"] == summary["best_step"]
    assert evaluate_model(settings.out, settings.dev)["accuracy"] == pytest.approx(max(evals), abs=1e-9)
    assert not (settings.out / "best").exists() and not (settings.out / "checkpoints").exists()


def test_every_run_folder_gets_a_report_with_confusion_matrix_or_entity_scores(runs):
    for task, (settings, _) in runs.items():
        assert (settings.out / "report.html").is_file() and (settings.out / "loss.png").is_file(), task
    details = json.loads((runs["classify"][0].out / "eval_details.json").read_text())
    matrix = np.array(details["confusion_matrix"])
    assert details["labels"] == ["neg", "pos"] and matrix.sum() == 64  # every dev example counted once
    assert (runs["classify"][0].out / "confusion_matrix.png").is_file()
    entities = json.loads((runs["tag"][0].out / "eval_details.json").read_text())["per_entity"]
    assert entities and all(0.0 <= v["f1"] <= 1.0 for v in entities.values())
    assert (runs["tag"][0].out / "entity_f1.png").is_file()


def test_model_directory_carries_task_labels_and_tokenizer(runs):
    settings, _ = runs["classify"]
    config = json.loads((settings.out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    assert config["problem_type"] == "single_label_classification"
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["bertkit"]["task"] == "classify" and config["bertkit"]["max_seq_len"] == 32
    assert (settings.out / "vocab.txt").is_file() and (settings.out / "tokenizer_config.json").is_file()
    loaded = load_task_model(settings.out)
    assert loaded.task == "classify" and loaded.labels == ("neg", "pos") and not loaded.model.training
    regress = json.loads((runs["regress"][0].out / "config.json").read_text())
    assert regress["problem_type"] == "regression" and len(regress["id2label"]) == 1


@pytest.mark.parametrize("task", ["classify", "regress", "tag", "qa"])
def test_transformers_loads_the_model_with_equal_logits(runs, task):
    settings, _ = runs[task]
    loaded = load_task_model(settings.out)
    sequence = transformers.BertForSequenceClassification
    cls = {"classify": sequence, "regress": sequence, "tag": transformers.BertForTokenClassification,
           "qa": transformers.BertForQuestionAnswering}[task]
    theirs = cls.from_pretrained(str(settings.out)).eval()
    batch = loaded.tokenizer.batch_encode(["the cat visited paris", "a good film , really nice ."], max_length=32)
    with torch.no_grad():
        ours_out, theirs_out = loaded.model(**batch), theirs(**batch)
    mask = batch["attention_mask"].bool()
    for name in ("start_logits", "end_logits") if task == "qa" else ("logits",):
        a, b = getattr(ours_out, name), getattr(theirs_out, name)
        if a.dim() > 1 and a.shape[:2] == mask.shape:  # token outputs: compare real tokens only
            a, b = a[mask], b[mask]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # `infer` runs any model with the standard outputs: the fine-tuning benchmark scores transformers with it.
    features = families.encode(loaded.spec, families.read_task_file(loaded.spec, settings.dev), loaded.tokenizer)
    ours_rows, ours_loss = infer(loaded.model, features[:6], pad_id=loaded.tokenizer.pad_id)
    theirs_rows, theirs_loss = infer(theirs, features[:6], pad_id=loaded.tokenizer.pad_id)
    for a, b in zip(ours_rows, theirs_rows, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    if task != "qa":  # span losses differ: padded positions' logits enter the softmax, and ours skip the encoder
        assert ours_loss == pytest.approx(theirs_loss, abs=1e-5)


def test_predictions_have_labels_spans_and_answer_offsets(runs, tmp_path):
    settings, _ = runs["classify"]
    rows = tmp_path / "texts.jsonl"
    write_table(rows, [{"text": "a good film , so nice"}, {"text": "the plot was awful"}])
    assert predict(settings.out, rows, tmp_path / "cls.jsonl") == 2
    records = [json.loads(line) for line in (tmp_path / "cls.jsonl").read_text().splitlines()]
    assert [r["label"] for r in records] == ["pos", "neg"]
    assert sum(records[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)

    write_table(rows, [{"text": "alice visited rome"}])
    predict(runs["tag"][0].out, rows, tmp_path / "tag.jsonl")
    tagged = json.loads((tmp_path / "tag.jsonl").read_text())
    assert tagged["tags"] == ["B-PER", "O", "B-LOC"]
    assert [(e["label"], e["start"], e["end"], e["text"]) for e in tagged["entities"]] == [
        ("PER", 0, 5, "alice"), ("LOC", 14, 18, "rome")]

    questions = tmp_path / "questions.jsonl"
    context = "the story of the hat was green really ."
    questions.write_text(json.dumps({"id": "x", "question": "what colour was the hat ?", "context": context}) + "\n")
    predict(runs["qa"][0].out, questions, tmp_path / "qa.jsonl")
    answer = json.loads((tmp_path / "qa.jsonl").read_text())
    assert answer["answer"] == "green" and context[answer["start"]:answer["end"]] == "green"
    assert np.isfinite(answer["score"])


def test_early_stopping_ends_the_run_after_patience_evaluations(pretrained, tmp_path):
    data = task_data("classify", tmp_path / "data")
    settings = FinetuneSettings(model=pretrained, out=tmp_path / "out", task="classify", **{**data, **FAST},
                                eval_every=2, patience=2, max_steps=40)
    settings.lr = 1e-12  # nothing improves after the first evaluation
    summary = run_finetune(settings)
    assert summary["stopped_early"] and summary["steps"] == 6 and summary["best_step"] == 2
    assert load_task_model(settings.out).task == "classify"


# --------------------------------------------------------------------------------------------------------
# Bad input and output directories
# --------------------------------------------------------------------------------------------------------


def test_dev_label_never_seen_in_training_is_named(pretrained, tmp_path):
    train = write_table(tmp_path / "train.jsonl", sentiment_rows(8, 0))
    dev = write_table(tmp_path / "dev.jsonl", [{"text": "so so", "label": "meh"}])
    with pytest.raises(TaskDataError, match=r"dev.jsonl:1: label 'meh' never seen in training"):
        run_finetune(FinetuneSettings(model=pretrained, out=tmp_path / "out", task="classify", train=train, dev=dev))
    assert not (tmp_path / "out").exists()


def test_missing_column_and_missing_pair_column_are_named(pretrained, tmp_path):
    train = write_table(tmp_path / "train.tsv", sentiment_rows(8, 0))
    with pytest.raises(TaskDataError, match=r"train.tsv: no column 'review'"):
        run_finetune(FinetuneSettings(model=pretrained, out=tmp_path / "out", task="classify", train=train,
                                      text_column="review"))
    with pytest.raises(ValueError, match="pair column"):
        run_finetune(FinetuneSettings(model=pretrained, out=tmp_path / "out", task="pair", train=train))


def test_output_directory_is_never_clobbered(runs, pretrained, tmp_path):
    settings, _ = runs["classify"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    for out in (other, settings.out):
        with pytest.raises(FileExistsError):
            run_finetune(FinetuneSettings(model=pretrained, out=out, task="classify", train=settings.train))
    with pytest.raises(FileExistsError, match="notes.txt|holds no fine-tuning run"):
        run_finetune(FinetuneSettings(model=pretrained, out=other, task="classify", train=settings.train,
                                      overwrite=True))
    with pytest.raises(FileExistsError, match="task 'classify', not 'regress'"):
        run_finetune(FinetuneSettings(model=pretrained, out=settings.out, task="regress", train=settings.train,
                                      overwrite=True))
    with pytest.raises(FileExistsError, match="finished"):
        run_finetune(FinetuneSettings(model=pretrained, out=settings.out, task="classify", train=settings.train,
                                      resume=True))
    assert (other / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_a_previous_run_of_the_same_task(pretrained, tmp_path):
    data = task_data("classify", tmp_path / "data")
    settings = FinetuneSettings(model=pretrained, out=tmp_path / "out", task="classify", **{**data, **FAST},
                                max_steps=2)
    run_finetune(settings)
    settings.overwrite = True
    (settings.out / "stale.txt").write_text("old")
    assert run_finetune(settings)["steps"] == 2
    assert not (settings.out / "stale.txt").exists()


def test_resume_continues_an_interrupted_run_from_its_checkpoint(pretrained, tmp_path, monkeypatch):
    data = task_data("classify", tmp_path / "data")
    settings = FinetuneSettings(model=pretrained, out=tmp_path / "out", task="classify",
                                **{**data, **FAST, "save_every": 2}, max_steps=6, eval_every=2)
    original = TaskBatches.batch

    def crash_at_step_4(self, epoch, index):
        if index == 3:
            raise KeyboardInterrupt
        return original(self, epoch, index)

    monkeypatch.setattr(TaskBatches, "batch", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(settings)
    monkeypatch.setattr(TaskBatches, "batch", original)
    with pytest.raises(FileExistsError, match="resume it"):
        run_finetune(settings)
    settings.resume = True
    assert run_finetune(settings)["steps"] == 6
    steps = [r["step"] for r in read_metrics(settings.out / "metrics.jsonl") if "eval_accuracy" in r]
    assert steps == [2, 4, 6] and load_task_model(settings.out).task == "classify"


def test_a_model_of_one_task_refuses_data_of_another(runs, tmp_path):
    with pytest.raises(ValueError, match="fine-tuned for task 'tag'; it cannot be used for task 'classify'"):
        load_task_model(runs["tag"][0].out, task="classify")
    with pytest.raises(ValueError, match="fine-tuned for task 'classify'; it cannot be used for task 'regress'"):
        evaluate_model(runs["classify"][0].out, tmp_path / "dev.tsv", glue="stsb")


def test_squad_answers_with_wrong_start_are_skipped_and_counted(pretrained, tmp_path, caplog):
    path = write_squad(tmp_path / "train.json", 12, 0)
    data = json.loads(path.read_text())
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    path.write_text(json.dumps(data))
    settings = FinetuneSettings(model=pretrained, out=tmp_path / "out", task="qa", train=path, max_steps=1,
                                max_seq_len=48, doc_stride=16, max_query_len=12, **{**FAST, "save_every": 0})
    assert run_finetune(settings)["train_examples"] == 11
    assert "train.json: skipped 1 answers whose answer_start does not match" in caplog.text


def test_schedule_and_optimizer_follow_the_standard_fine_tuning_recipe(pretrained, tmp_path):
    """Warm-up lasts ceil(10%) of the steps and AdamW's epsilon is 1e-8, as in transformers' recipe, so the
    same flags give the same run there (round() would give 1 warm-up step of 14, and BERT's TF eps is 1e-6)."""
    data = {**task_data("tag", tmp_path / "data"), **FAST, "max_steps": 14, "dev": None}
    settings = FinetuneSettings(model=pretrained, out=tmp_path / "out", task="tag", **data)
    run_finetune(settings)
    lrs = {r["step"]: r["lr"] for r in read_metrics(settings.out / "metrics.jsonl") if "lr" in r}
    assert lrs[6] == pytest.approx(settings.lr * (1 - 3 / 12))  # update 6 of 14, after 2 warm-up steps (0.69 after 1)
    assert finetune_module._train_config(settings, TaskBatches(range(3), 1, 0), False).eps == 1e-8
