"""RoBERTa, DistilBERT and ALBERT through fine-tuning, evaluation, prediction and `bertkit info`.

Each variant is a tiny random model with its own kind of tokenizer (byte-level BPE, WordPiece without token
types, SentencePiece with E < H), fine-tuned through `run_finetune` on the toy tasks of tests/finetune_toys.py:
every family learns, the saved task directory names the variant's own class and loads in transformers with
equal logits (within 1e-5, fp32, real tokens of a padded batch), and the pair layout is the tokenizer's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from bertkit.cli import main
from bertkit.config import BertConfig
from bertkit.recipes import finetune
from bertkit.recipes.finetune import FinetuneSettings, evaluate_model, predict, run_finetune
from bertkit.tasks import families, qa, tagging
from bertkit.tasks.batches import TaskBatches, model_inputs
from bertkit.tasks.models import load_task_model, run_on_features
from bertkit.tasks.readers import Answer, QAExample, TaggingExample
from bertkit.tokenizer import Tokenizer
from bertkit.train.logging import read_metrics
from finetune_toys import (
    make_pretrained_variant,
    pair_rows,
    sentiment_rows,
    write_conll,
    write_squad,
    write_table,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCHS = ("roberta", "distilbert", "albert")
PREFIX = {"roberta": "Roberta", "distilbert": "DistilBert", "albert": "Albert"}
# task: (dev metric, threshold the tiny model must reach, steps)
LEARNS = {"classify": ("accuracy", 0.8, 60), "pair": ("accuracy", 0.7, 100), "tag": ("f1", 0.8, 18),
          "qa": ("f1", 0.6, 30)}
HEAD = {"classify": "ForSequenceClassification", "pair": "ForSequenceClassification",
        "tag": "ForTokenClassification", "qa": "ForQuestionAnswering"}
FAST = dict(batch_size=16, lr=3e-3, save_every=0, progress=False, eval_batch_size=64)


def task_data(task: str, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    if task == "tag":
        return dict(train=write_conll(folder / "train.conll", 96, 0), dev=write_conll(folder / "dev.conll", 48, 1),
                    max_seq_len=32)
    if task == "qa":
        return dict(train=write_squad(folder / "train.json", 160, 0), dev=write_squad(folder / "dev.json", 48, 1),
                    max_seq_len=48, doc_stride=16, max_query_len=12)
    rows = sentiment_rows if task == "classify" else pair_rows
    train, dev = write_table(folder / "train.jsonl", rows(160, 0)), write_table(folder / "dev.tsv", rows(64, 1))
    return dict(train=train, dev=dev, pair_column="pair" if task == "pair" else None, max_seq_len=32)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    return {arch: make_pretrained_variant(root / arch, arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def runs(pretrained, tmp_path_factory) -> dict[tuple[str, str], tuple[FinetuneSettings, dict]]:
    """One fine-tune per variant and family. The report's plots (tested with BERT) would take most of the time."""
    root = tmp_path_factory.mktemp("family_runs")
    data = {task: task_data(task, root / "data" / task) for task in LEARNS}
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetune, "write_report", lambda run_dir: None)
        for arch in ARCHS:
            for task, (_, _, steps) in LEARNS.items():
                settings = FinetuneSettings(model=pretrained[arch], out=root / f"{arch}-{task}", task=task,
                                            max_steps=steps, **data[task], **FAST)
                out[arch, task] = (settings, run_finetune(settings))
    return out


@pytest.mark.parametrize("task", list(LEARNS))
@pytest.mark.parametrize("arch", ARCHS)
def test_each_variant_learns_every_family(runs, arch, task):
    settings, summary = runs[arch, task]
    metric, threshold, _ = LEARNS[task]
    losses = [r["loss"] for r in read_metrics(settings.out / "metrics.jsonl") if "loss" in r]
    assert losses[-1] < 0.6 * losses[0]
    assert summary["metric"] == metric and summary["best_value"] >= threshold


def _inputs(task: str, tokenizer: Tokenizer, config: BertConfig) -> dict[str, torch.Tensor]:
    """A right-padded batch in the tokenizer's layout, without token types where the model has none."""
    texts = ["alice visited rome and bob", "a good film , really nice ."]
    pairs = None
    if task == "pair":
        pairs = ["the plot was awful", "so great"]
    if task == "qa":
        texts, pairs = ["what colour was the hat ?", "what colour was the car ?"], ["the hat was red .", "it was ."]
    return model_inputs(tokenizer.batch_encode(texts, pairs, max_length=32), config)


@pytest.mark.parametrize("task", list(LEARNS))
@pytest.mark.parametrize("arch", ARCHS)
def test_task_dir_names_the_variant_class_and_transformers_loads_it_with_equal_logits(runs, arch, task):
    settings, _ = runs[arch, task]
    config = json.loads((settings.out / "config.json").read_text())
    assert config["architectures"] == [PREFIX[arch] + HEAD[task]] and config["model_type"] == arch
    auto = {"ForSequenceClassification": transformers.AutoModelForSequenceClassification,
            "ForTokenClassification": transformers.AutoModelForTokenClassification,
            "ForQuestionAnswering": transformers.AutoModelForQuestionAnswering}[HEAD[task]]
    theirs = auto.from_pretrained(str(settings.out)).eval()
    assert type(theirs).__name__ == PREFIX[arch] + HEAD[task]
    loaded = load_task_model(settings.out)
    batch = _inputs(task, loaded.tokenizer, loaded.model.config)
    assert ("token_type_ids" in batch) == (arch != "distilbert")
    with torch.no_grad():
        ours_out, theirs_out = loaded.model(**batch), theirs(**batch)
    mask = batch["attention_mask"].bool()
    for name in ("start_logits", "end_logits") if task == "qa" else ("logits",):
        a, b = getattr(ours_out, name), getattr(theirs_out, name)
        if a.dim() > 1 and a.shape[:2] == mask.shape:  # token outputs: compare real tokens only
            a, b = a[mask], b[mask]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_evaluate_and_predict_work_for_each_variant(runs, arch, tmp_path):
    settings, summary = runs[arch, "classify"]
    assert evaluate_model(settings.out, settings.dev)["accuracy"] == pytest.approx(summary["best_value"], abs=1e-9)
    rows = write_table(tmp_path / "texts.jsonl", [{"text": "a good film , so nice"}, {"text": "the plot was awful"}])
    assert predict(settings.out, rows, tmp_path / "cls.jsonl") == 2
    assert [json.loads(line)["label"] for line in (tmp_path / "cls.jsonl").read_text().splitlines()] == ["pos", "neg"]

    write_table(rows, [{"text": "alice visited rome"}])
    predict(runs[arch, "tag"][0].out, rows, tmp_path / "tag.jsonl")
    tagged = json.loads((tmp_path / "tag.jsonl").read_text())
    assert tagged["tags"] == ["B-PER", "O", "B-LOC"]
    assert [(e["label"], e["start"], e["end"]) for e in tagged["entities"]] == [("PER", 0, 5), ("LOC", 14, 18)]

    questions = tmp_path / "questions.jsonl"
    context = "the story of the hat was green really ."
    questions.write_text(json.dumps({"id": "x", "question": "what colour was the hat ?", "context": context}) + "\n")
    predict(runs[arch, "qa"][0].out, questions, tmp_path / "qa.jsonl")
    answer = json.loads((tmp_path / "qa.jsonl").read_text())
    assert answer["answer"] == "green" and context[answer["start"]:answer["end"]] == "green"


def test_cli_evaluate_reads_the_variant_from_the_model_dir(runs, capsys):
    settings, summary = runs["distilbert", "pair"]
    assert main(["evaluate", "--model", str(settings.out), "--data", str(settings.dev)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["accuracy"] == pytest.approx(summary["best_value"], abs=1e-9)


@pytest.mark.parametrize("arch", ARCHS)
def test_info_shows_the_architecture_and_the_tokenizer(pretrained, runs, arch, capsys):
    assert main(["info", str(pretrained[arch])]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    pretraining = {"roberta": "RobertaForMaskedLM", "distilbert": "DistilBertForMaskedLM",
                   "albert": "AlbertForPreTraining"}[arch]
    assert rows["architecture"] == pretraining and rows["model_type"] == arch
    kind = {"roberta": "bpe", "distilbert": "wordpiece", "albert": "unigram"}[arch]
    assert rows["tokenizer"].startswith(kind + " ")
    expected = {
        "roberta": {"position_offset": "2", "max_position_embeddings": "66", "max_sequence_length": "64",
                    "token_types": "1"},
        "distilbert": {"token_types": "0", "max_sequence_length": "64"},
        "albert": {"embedding_size": "16", "hidden_size": "32", "num_hidden_groups": "1", "inner_group_num": "1"},
    }[arch]
    assert {k: rows.get(k) for k in expected} == expected
    assert ("embedding_size" in rows) == (arch == "albert") and ("position_offset" in rows) == (arch == "roberta")
    assert main(["info", str(runs[arch, "tag"][0].out)]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert rows["architecture"] == PREFIX[arch] + "ForTokenClassification"


# --------------------------------------------------------------------------------------------------------
# The tokenizer's layout, token types, and bad input
# --------------------------------------------------------------------------------------------------------


def test_qa_windows_use_robertas_pair_layout(pretrained):
    tok = Tokenizer.from_pretrained(pretrained["roberta"])
    context = "the film was long . " * 6 + "the hat was green ."
    example = QAExample("q", "what colour was the hat ?", context, (Answer("green", context.index("green")),))
    features = qa.encode_qa([example], tok, max_seq_len=24, doc_stride=6, max_query_len=8)
    question = tok.encode(example.question, add_special_tokens=False).ids
    s, end = tok.cls_id, tok.sep_id
    assert len(features) > 2 and all(len(f.input_ids) <= 24 for f in features)
    for f in features:
        assert f.input_ids[: len(question) + 3] == [s, *question, end, end] and f.input_ids[-1] == end
        assert f.token_type_ids == [0] * len(f.input_ids)  # RoBERTa: all zero, also for the passage
        assert f.offsets[: len(question) + 3] == [None] * (len(question) + 3) and f.offsets[-1] is None
        assert f.cls_index == 0
    answered = [f for f in features if f.start_position != f.cls_index]
    assert answered and all(context[f.offsets[f.start_position][0]:f.offsets[f.end_position][1]] == "green"
                            for f in answered)


def test_tagging_truncation_keeps_the_closing_special_token(pretrained):
    for arch in ARCHS:
        tok = Tokenizer.from_pretrained(pretrained[arch])
        sentence = TaggingExample(("alice", "visited", "rome", "and", "bob", "met", "carol"), ("B-PER",) + ("O",) * 6)
        (feature,) = tagging.encode_tagging([sentence], tok, ["O", "B-PER"], max_seq_len=5)
        assert feature.truncated and len(feature.input_ids) == 5
        assert feature.input_ids[0] == tok.cls_id and feature.input_ids[-1] == tok.sep_id
        assert feature.first_token[:3] == [1, 2, 3] and feature.first_token[3:] == [-1] * 4


def test_a_model_without_token_types_gets_batches_without_them(pretrained, runs):
    config = BertConfig.from_json_file(pretrained["distilbert"] / "config.json")
    assert not config.has_token_types and config.replace(model_type="bert", type_vocab_size=2).has_token_types
    settings, _ = runs["distilbert", "classify"]
    loaded = load_task_model(settings.out)
    features = families.encode(loaded.spec, families.read_task_file(loaded.spec, settings.dev), loaded.tokenizer)
    batch = TaskBatches(features, 8, seed=0, token_types=config.has_token_types).batch(0, 0)
    assert "token_type_ids" not in batch and set(batch) == {"input_ids", "attention_mask", "labels"}
    with pytest.raises(ValueError, match="distilbert has no token types"):
        loaded.model(**TaskBatches(features, 8, seed=0).batch(0, 0))
    outputs, loss = run_on_features(loaded.model, features[:4], pad_id=loaded.tokenizer.pad_id)
    assert len(outputs) == 4 and loss is not None


def test_a_task_dir_saved_by_transformers_loads_with_its_family(pretrained, tmp_path):
    source = pretrained["roberta"]
    config = transformers.AutoConfig.from_pretrained(str(source), id2label={0: "O", 1: "B-PER"})
    torch.manual_seed(0)
    reference = transformers.RobertaForTokenClassification(config).eval()
    reference.save_pretrained(str(tmp_path))
    Tokenizer.from_pretrained(source).save_pretrained(tmp_path)
    loaded = load_task_model(tmp_path)
    assert loaded.task == "tag" and loaded.labels == ("O", "B-PER")
    batch = _inputs("tag", loaded.tokenizer, loaded.model.config)
    with torch.no_grad():
        mask = batch["attention_mask"].bool()
        torch.testing.assert_close(loaded.model(**batch).logits[mask], reference(**batch).logits[mask], atol=1e-5,
                                   rtol=0)


def test_max_seq_len_is_checked_against_the_usable_positions(pretrained, tmp_path):
    data = task_data("classify", tmp_path / "data")
    settings = FinetuneSettings(model=pretrained["roberta"], out=tmp_path / "out", task="classify",
                                **{**data, "max_seq_len": 65}, **FAST)
    with pytest.raises(ValueError, match="max_seq_len 65 exceeds the 64 tokens the roberta model accepts"):
        run_finetune(settings)
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_padding_with_another_id_is_refused_for_roberta(pretrained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(pretrained["roberta"], model)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (model / name).unlink()
    shutil.copy(pretrained["distilbert"] / "vocab.txt", model / "vocab.txt")  # WordPiece: [PAD] is id 0
    data = task_data("classify", tmp_path / "data")
    with pytest.raises(ValueError, match="pads with id 0 but the roberta model's pad_token_id is 1"):
        run_finetune(FinetuneSettings(model=model, out=tmp_path / "out", task="classify", **data, **FAST))
    assert not (tmp_path / "out").exists()
