"""run_pretraining: a tiny BERT learns MLM and NSP on the fixture corpus; mismatches fail before training."""

import json
import math
from pathlib import Path

import pytest
import torch

from bertkit import BertConfig, BertForPreTraining, BertModel
from bertkit.data.prepare import prepare
from bertkit.data.shards import ShardError, ShardSet
from bertkit.recipes.pretrain import PretrainingEvaluator, PretrainSettings, make_sources, run_pretraining
from bertkit.tokenizer import Tokenizer
from bertkit.train.distributed import DistInfo
from bertkit.train.logging import read_metrics

CORPUS = Path(__file__).parent / "fixtures" / "corpus"


def make_shards(root: Path, vocab_size: int = 1500, max_seq_len: int = 64, tok_dir: Path | None = None):
    """(tokenizer folder, shard folder) for the fixture corpus; a tokenizer is trained unless ``tok_dir`` is given."""
    shard_dir = root / f"shards{vocab_size}_{max_seq_len}"
    if tok_dir is None:
        tok_dir = root / f"tok{vocab_size}"
        Tokenizer.train(sorted(str(p) for p in CORPUS.glob("*.txt")), vocab_size=vocab_size).save_pretrained(tok_dir)
    prepare([str(CORPUS)], str(tok_dir), str(shard_dir), max_seq_len=max_seq_len, chunk_chars=40_000)
    return tok_dir, shard_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    return make_shards(tmp_path_factory.mktemp("data"))


def settings(data, out: Path, **overrides) -> PretrainSettings:
    tok_dir, shard_dir = data
    values = dict(data=str(shard_dir), out_dir=str(out), tokenizer=str(tok_dir), preset="tiny", max_steps=4,
                  batch_size=16, lr=1e-3, log_every=1, eval_every=0, save_every=0, progress=False, plots=False,
                  eval_holdout=64)
    return PretrainSettings(**{**values, **overrides})


def test_tiny_bert_learns_mlm_and_nsp_on_the_fixture_corpus(data, tmp_path):
    out = tmp_path / "run"
    summary = run_pretraining(settings(data, out, max_steps=300, batch_size=32, lr=1e-3, warmup_ratio=0.1,
                                       eval_every=300, eval_holdout=200, plots=True))
    before = summary["initial_eval"]
    assert before["mlm_accuracy"] < 0.02 and summary["eval_mlm_accuracy"] > 0.05
    assert summary["eval_perplexity"] < 0.5 * before["perplexity"]
    assert summary["eval_nsp_accuracy"] > 0.58  # 0.61-0.67 over seeds 0-2; always-one-class gives 0.475
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "metrics.jsonl",
                 "pretrain.json", "report.html", "loss.png", "eval_metrics.png", "lr.png"):
        assert (out / name).is_file(), name
    assert BertConfig.from_json_file(out / "config.json").vocab_size == ShardSet(data[1]).vocab_size == 1500
    assert Tokenizer.from_pretrained(out).fingerprint() == ShardSet(data[1]).fingerprint
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 301))
    assert {"eval_mlm_loss", "eval_mlm_accuracy", "eval_perplexity", "eval_nsp_accuracy"} <= set(records[-1])


def test_evaluation_is_deterministic_and_matches_full_vocabulary_logits(data):
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=1500)).eval()
    _, evaluation = make_sources(settings(data, "unused", eval_holdout=40, eval_batch_size=16),
                                 ShardSet(data[1]), None, DistInfo.single("cpu"))
    with torch.no_grad():
        first, second = PretrainingEvaluator(evaluation)(model), PretrainingEvaluator(evaluation)(model)
        assert first == second
        # Reference: logits at every position, then the masked ones picked out.
        total, count = 0.0, 0
        for i in range(evaluation.num_batches(0)):
            batch = evaluation.batch(0, i)
            hidden = model.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).last_hidden_state
            logits = model.mlm(hidden, model.bert.embeddings.token.weight)  # (B, T, V)
            selected = batch["mlm_labels"] != -100
            total += torch.nn.functional.cross_entropy(logits[selected], batch["mlm_labels"][selected],
                                                       reduction="sum").item()
            count += int(selected.sum())
    assert first["mlm_loss"] == pytest.approx(total / count, rel=1e-5)
    assert first["perplexity"] == pytest.approx(math.exp(first["mlm_loss"]))
    assert first["loss"] == pytest.approx(first["mlm_loss"] + first["nsp_loss"])


def test_init_from_an_encoder_checkpoint_starts_fresh_heads_and_reports_them(data, tmp_path):
    tok_dir, _ = data
    encoder = BertModel(BertConfig.preset("tiny", vocab_size=1500))
    encoder.save_pretrained(tmp_path / "encoder")
    Tokenizer.from_pretrained(tok_dir).save_pretrained(tmp_path / "encoder")
    summary = run_pretraining(settings(data, tmp_path / "run", init_from=str(tmp_path / "encoder"), tokenizer=None,
                                       max_steps=2))
    assert any(k.startswith("mlm.") for k in summary["fresh_parameters"])
    assert any(k.startswith("nsp.") for k in summary["fresh_parameters"])
    assert not any(k.startswith("bert.") and "pooler" not in k for k in summary["fresh_parameters"])
    assert json.loads((tmp_path / "run" / "pretrain.json").read_text())["fresh_parameters"]


def test_a_model_with_another_tokenizer_is_refused_before_training(data, tmp_path):
    other_tok, _ = make_shards(tmp_path, vocab_size=1200, max_seq_len=32)
    model_dir = tmp_path / "other_model"
    BertForPreTraining(BertConfig.preset("tiny", vocab_size=1200)).save_pretrained(model_dir)
    Tokenizer.from_pretrained(other_tok).save_pretrained(model_dir)
    with pytest.raises(ShardError, match="tokenizer"):
        run_pretraining(settings(data, tmp_path / "run1", init_from=str(model_dir), tokenizer=None))
    with pytest.raises(ShardError, match="tokenizer"):
        run_pretraining(settings(data, tmp_path / "run2", tokenizer=str(other_tok)))
    with pytest.raises(ShardError, match="another tokenizer"):
        run_pretraining(settings(data, tmp_path / "run3", phase2_data=str(tmp_path / "shards1200_32"),
                                 phase2_steps=2))
    assert not any((tmp_path / f"run{i}" / "metrics.jsonl").exists() for i in (1, 2, 3))


def test_two_phases_and_resume_with_changed_settings_is_refused(data, tmp_path):
    _, long_shards = make_shards(tmp_path, max_seq_len=128, tok_dir=data[0])
    out = tmp_path / "run"
    summary = run_pretraining(settings(data, out, max_steps=4, phase2_data=str(long_shards), phase2_steps=2,
                                       save_every=2))
    assert summary["step"] == 4
    with pytest.raises(ValueError, match="batch_size"):
        run_pretraining(settings(data, out, max_steps=4, phase2_data=str(long_shards), phase2_steps=2,
                                 batch_size=8, resume=True))
    with pytest.raises(FileExistsError):
        run_pretraining(settings(data, out, max_steps=4, phase2_data=str(long_shards), phase2_steps=2))


def test_settings_reject_inconsistent_values(data):
    with pytest.raises(ValueError, match="preset"):
        settings(data, "x", preset="huge")
    with pytest.raises(ValueError, match="phase2"):
        settings(data, "x", phase2_steps=2)
    with pytest.raises(ValueError, match="init_from or config_file"):
        settings(data, "x", init_from="a", config_file="b")
