"""Pretraining objectives of the BERT family: SOP pairs (ALBERT), packed full sentences (RoBERTa), the objective in
the manifest and the batches, and a tiny model of each variant learning on the fixture corpus with its own objective.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from bertkit import BertConfig, BertForPreTraining
from bertkit.cli import main
from bertkit.data.corpus import iter_documents
from bertkit.data.prepare import prepare
from bertkit.data.pretraining import ARCH_OBJECTIVES, PretrainingBatches, make_sop_instances, pack_full_sentences
from bertkit.data.shards import ShardError, ShardSet, write_manifest, write_shard
from bertkit.recipes.pretrain import PretrainSettings, model_config, run_pretraining
from bertkit.tokenizer import Tokenizer
from bertkit.train.logging import read_metrics

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
CLS, SEP, PAD, MASK = 101, 102, 0, 103
SPECIALS = (PAD, 100, CLS, SEP, MASK)


def _documents(rng: np.random.Generator, n_docs: int = 80, max_sentences: int = 30) -> list[list[list[int]]]:
    """Documents of 1..max_sentences sentences of 1..25 ids; ids count up through each document from
    ``200_000 + 1000 * d``, so a test can tell the document and the position of every token."""
    docs = []
    for d in range(n_docs):
        position, sentences = 200_000 + 1000 * d, []
        for _ in range(int(rng.integers(1, max_sentences + 1))):
            length = int(rng.integers(1, 26))
            sentences.append(list(range(position, position + length)))
            position += length
        docs.append(sentences)
    return docs


# ------------------------------------------------------------------------------------------------ SOP
def _sop_instances(max_seq_len: int = 64, passes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    docs = _documents(rng)
    return [(d, x) for _ in range(passes) for d, doc in enumerate(docs)
            for x in make_sop_instances(doc, rng, max_seq_len, 0.1, cls_id=CLS, sep_id=SEP)]


def test_sop_swaps_about_half_and_the_label_says_which_order():
    instances = _sop_instances()
    assert len(instances) > 3000
    labels = np.array([x.label for _, x in instances])
    assert set(labels.tolist()) == {0, 1}
    assert abs(labels.mean() - 0.5) < 0.03  # binomial sd over > 3000 draws is about 0.009
    for d, x in instances:
        ids = np.array(x.ids)
        assert len(ids) <= 64 and ids[0] == CLS and ids[x.a_len - 1] == SEP and ids[-1] == SEP
        a, b = ids[1 : x.a_len - 1], ids[x.a_len : -1]
        assert len(a) and len(b)
        assert {v // 1000 - 200 for v in [*a, *b]} == {d}  # both segments from the instance's own document
        assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)  # each segment is contiguous text
        if x.label == 0:
            assert a[-1] < b[0]  # in order: B follows A
        else:
            assert b[-1] < a[0]  # swapped: what is shown first comes later in the document


def test_sop_is_deterministic_for_a_seed_and_handles_tiny_documents():
    assert _sop_instances(passes=1, seed=3) == _sop_instances(passes=1, seed=3)
    assert _sop_instances(passes=1, seed=3) != _sop_instances(passes=1, seed=4)
    rng = np.random.default_rng(0)
    assert make_sop_instances([[9]], rng, 16, cls_id=CLS, sep_id=SEP) == []  # one token cannot be split
    (x,) = make_sop_instances([[5, 6, 7, 8]], rng, 16, cls_id=CLS, sep_id=SEP)  # one sentence: cut inside it
    assert sorted(x.ids[1 : x.a_len - 1] + x.ids[x.a_len : -1]) == [5, 6, 7, 8]


# ------------------------------------------------------------------------------------- full sentences
def test_full_sentence_packing_keeps_every_token_once_in_order_within_the_length():
    docs = _documents(np.random.default_rng(0), n_docs=60)
    docs[7] = [list(range(207_000, 207_150))]  # a sentence longer than a whole sequence is cut, not dropped
    sequences = pack_full_sentences(docs, 64, cls_id=CLS, sep_id=SEP)
    corpus = [t for doc in docs for s in doc for t in s]
    seen: list[int] = []
    separators = 0
    for x in sequences:
        ids = x.ids
        assert 3 <= len(ids) <= 64 and ids[0] == CLS and ids[-1] == SEP and CLS not in ids[1:]
        assert x.a_len == len(ids) and x.label == 0  # one segment, no sentence label
        body = ids[1:-1]
        for i, t in enumerate(body):
            if t == SEP:  # a separator only ever sits between two documents
                separators += 1
                assert 0 < i < len(body) - 1 and body[i - 1] // 1000 != body[i + 1] // 1000
            elif i and body[i - 1] != SEP:
                assert t // 1000 == body[i - 1] // 1000  # without a separator, the document does not change
        seen.extend(t for t in body if t != SEP)
    assert seen == corpus  # every token of the corpus once per pass, in order
    assert separators >= len(docs) - len(sequences)  # sequences cross document boundaries
    assert all(len(x.ids) >= 64 - 25 for x in sequences[:-1])  # full: only a sentence that did not fit is left


def test_full_sentence_packing_starts_sequences_at_sentence_boundaries():
    docs = _documents(np.random.default_rng(1), n_docs=30)
    starts = {s[0] for doc in docs for s in doc}
    for x in pack_full_sentences(docs, 48, cls_id=CLS, sep_id=SEP):
        assert x.ids[1] in starts  # whole sentences: no sequence begins mid-sentence (none here exceeds 46)
    with pytest.raises(ValueError, match="max_seq_len"):
        pack_full_sentences(docs, 2, cls_id=CLS, sep_id=SEP)


# ------------------------------------------------------------------------------ manifest and batches
def _shard_set(path: Path, objective: str | None, n: int = 40) -> Path:
    """A shard set of ``n`` two-segment instances (labels alternate) whose manifest names ``objective``."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = [[CLS, *rng.integers(200, 900, size=6).tolist(), SEP, *rng.integers(200, 900, size=5).tolist(), SEP]
           for _ in range(n)]
    entry = write_shard(str(path / "shard_00000.bin"), ids, [8] * n, [i % 2 for i in range(n)],
                        np.zeros(1000, dtype=bool), np.dtype(np.uint16))
    tok = {"fingerprint": "f" * 64, "vocab_size": 1000, "special_ids": sorted(SPECIALS), "cls_id": CLS,
           "sep_id": SEP, "pad_id": PAD, "mask_id": MASK, "unk_id": 100}
    manifest = {"tokenizer": tok, "settings": {"max_seq_len": 16}, "shards": [entry]}
    write_manifest(str(path), manifest if objective is None else {"objective": objective, **manifest})
    return path


def test_batches_carry_sentence_labels_and_token_types_only_when_used(tmp_path):
    old = PretrainingBatches(str(_shard_set(tmp_path / "old", None)), 8, seed=0)
    assert old.shards.objective == "nsp" and old.sentence_task == "nsp"  # sets from before objectives existed
    sop = PretrainingBatches(str(_shard_set(tmp_path / "sop", "sop")), 8, seed=0)
    batch = sop.batch(0, 0)
    assert sop.sentence_task == "sop" and batch["nsp_labels"].shape == (8,)
    assert (batch["token_type_ids"][:, :8] == 0).all() and (batch["token_type_ids"][:, 8:] == 1).all()
    none = PretrainingBatches(str(_shard_set(tmp_path / "none", "none")), 8, seed=0, token_types=False)
    batch = none.batch(0, 0)
    assert none.sentence_task is None and "nsp_labels" not in batch and "token_type_ids" not in batch
    assert set(batch) == {"input_ids", "attention_mask", "mlm_labels"}
    held = none.split_holdout(8)[1]
    assert "token_type_ids" not in held.batch(0, 0) and held.sentence_task is None
    dropped = PretrainingBatches(sop.shards, 8, seed=0, sentence_labels=False)  # e.g. distillation on pair shards
    assert "nsp_labels" not in dropped.batch(0, 0)
    with pytest.raises(ValueError, match="no sentence labels"):
        PretrainingBatches(none.shards, 8, seed=0, sentence_labels=True)


def test_unknown_objective_in_a_manifest_is_named(tmp_path):
    _shard_set(tmp_path, "mlm+xyz")
    with pytest.raises(ShardError, match=r"manifest\.json.*'mlm\+xyz'"):
        ShardSet(str(tmp_path))


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[str, Path]:
    """A 1000-entry vocabulary of each scheme, trained on the fixture corpus."""
    root = tmp_path_factory.mktemp("tokenizers")
    files = sorted(str(p) for p in CORPUS.glob("*.txt"))
    for kind in ("wordpiece", "bpe", "unigram"):
        Tokenizer.train(files, vocab_size=1000, kind=kind).save_pretrained(root / kind)
    return {kind: root / kind for kind in ("wordpiece", "bpe", "unigram")}


def test_prepare_records_the_arch_objective_in_the_manifest(tokenizers, tmp_path):
    wordpiece_dir = tokenizers["wordpiece"]
    tok = Tokenizer.from_pretrained(wordpiece_dir)
    small = {"max_seq_len": 64, "chunk_chars": 60_000}
    albert = prepare([str(CORPUS / "alice_in_wonderland.txt")], str(wordpiece_dir), str(tmp_path / "albert"),
                     arch="albert", **small)
    assert albert["objective"] == "sop" and albert["settings"]["arch"] == "albert" and "not_next" not in albert
    assert 0.4 < albert["counts"]["swapped"] / albert["counts"]["instances"] < 0.6
    roberta = prepare([str(CORPUS / "alice_in_wonderland.txt")], str(wordpiece_dir), str(tmp_path / "roberta"),
                      arch="roberta", max_seq_len=128, chunk_chars=60_000)
    counts = roberta["counts"]
    assert roberta["objective"] == "none" and not {"not_next", "swapped"} & set(counts)
    shards = ShardSet(str(tmp_path / "roberta"), verify=True)
    rows = [shards[i] for i in range(len(shards))]
    assert all(r.a_len == len(r.ids) <= 128 and r.nsp_label == 0 and r.ids[0] == tok.cls_id for r in rows)
    assert counts["instances"] < 0.5 * counts["sentences"]  # packed: several sentences per sequence
    assert np.mean([len(r.ids) for r in rows]) > 0.75 * 128  # sequences are mostly full
    assert sum(int(np.count_nonzero(r.ids == tok.sep_id)) - 1 for r in rows) > 0  # document separators
    with pytest.raises(ValueError, match="dupe_factor"):
        prepare([str(CORPUS)], str(wordpiece_dir), str(tmp_path / "x"), arch="roberta", dupe_factor=2)
    with pytest.raises(ValueError, match="unknown architecture"):
        prepare([str(CORPUS)], str(wordpiece_dir), str(tmp_path / "x"), arch="gpt2")
    assert not (tmp_path / "x").exists()
    assert ARCH_OBJECTIVES == {"bert": "nsp", "albert": "sop", "roberta": "none", "distilbert": "none"}


# ----------------------------------------------------------------------------------- every variant learns
TOKENIZER_KIND = {"roberta": "bpe", "albert": "unigram", "distilbert": "wordpiece", "bert": "wordpiece"}


@pytest.fixture(scope="module")
def family_shards(tokenizers, tmp_path_factory) -> dict[str, Path]:
    """Shards of the fixture corpus for each arch, with its own tokenizer scheme and objective, at length 32."""
    root = tmp_path_factory.mktemp("family_shards")
    for arch, kind in TOKENIZER_KIND.items():
        prepare([str(CORPUS)], str(tokenizers[kind]), str(root / arch), arch=arch, max_seq_len=32, chunk_chars=40_000)
    return {arch: root / arch for arch in TOKENIZER_KIND}


def _settings(shards: Path, out: Path, **overrides) -> PretrainSettings:
    values = dict(data=str(shards), out_dir=str(out), preset="tiny", max_steps=30, batch_size=16, lr=3e-3,
                  warmup_ratio=0.1, log_every=1, eval_every=0, save_every=0, eval_holdout=32, progress=False,
                  plots=False)
    return PretrainSettings(**{**values, **overrides})


def test_byte_level_bpe_shards_hold_the_text_as_the_tokenizer_encodes_it_whole(tokenizers, family_shards):
    """Packed RoBERTa sequences, stripped of <s>, </s> and document separators, are the corpus encoded document
    by document (later sentences keep their leading space, so "Ġword" tokens are the ones the model will see)."""
    tok = Tokenizer.from_pretrained(tokenizers["bpe"])
    shards = ShardSet(str(family_shards["roberta"]))
    stream = [t for i in range(len(shards)) for t in shards[i].ids.tolist() if t not in (tok.cls_id, tok.sep_id)]
    expected = [t for doc in iter_documents([str(CORPUS)]) for t in tok.tokenize_ids([" ".join(doc)])[0]]
    assert stream == expected


@pytest.mark.parametrize("arch", ["roberta", "albert"])
def test_whole_word_masking_follows_each_schemes_word_boundaries(arch, tokenizers, family_shards):
    """Byte-level BPE words start with "Ġ", SentencePiece words with "▁": a masked word is masked whole."""
    tok = Tokenizer.from_pretrained(tokenizers[TOKENIZER_KIND[arch]])
    source = PretrainingBatches(str(family_shards[arch]), 64, seed=0, whole_word=True)
    batch = source.batch(0, 0)
    ids, chosen = batch["input_ids"].numpy(), (batch["mlm_labels"] != -100).numpy()
    original = np.where(chosen, batch["mlm_labels"].numpy(), ids)
    inside = tok.continuation_mask[original] & ~np.isin(original, sorted(tok.special_ids))
    assert chosen.sum() > 0.1 * batch["attention_mask"].sum() and inside.any()
    # A piece inside a word is chosen exactly when the piece before it is (the word's start decides for all).
    follows = inside[:, 1:] & ~np.isin(original[:, :-1], sorted(tok.special_ids))
    assert np.array_equal(chosen[:, 1:][follows], chosen[:, :-1][follows])


@pytest.mark.parametrize("arch", ["roberta", "albert", "distilbert"])
def test_tiny_variant_pretrains_with_its_own_objective_and_its_loss_falls(
    arch, family_shards, tmp_path, one_torch_thread
):
    torch.manual_seed(0)
    summary = run_pretraining(_settings(family_shards[arch], tmp_path / "run", arch=arch))
    before, task = summary["initial_eval"], {"albert": "sop"}.get(arch)
    assert summary["eval_mlm_loss"] < before["mlm_loss"] - 0.4  # ln(1000) = 6.9 falls to about 6.1-6.3
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    sentence_keys = {k for k in summary if k.startswith(("eval_nsp", "eval_sop"))}
    assert sentence_keys == ({f"eval_{task}_loss", f"eval_{task}_accuracy"} if task else set())
    config = BertConfig.from_json_file(tmp_path / "run" / "config.json")
    assert config.model_type == arch and config.sentence_task == task
    assert Tokenizer.from_pretrained(tmp_path / "run").fingerprint() == ShardSet(family_shards[arch]).fingerprint
    assert json.loads((tmp_path / "run" / "pretrain.json").read_text())["data"]["objective"] == (task or "none")


# ------------------------------------------------------------------------------ arch resolution, errors
def test_arch_comes_from_the_shards_and_shards_of_another_objective_are_refused(family_shards, tmp_path):
    assert model_config(_settings(family_shards["albert"], tmp_path), ShardSet(family_shards["albert"])).model_type \
        == "albert"
    roberta = model_config(_settings(family_shards["roberta"], tmp_path), ShardSet(family_shards["roberta"]))
    assert roberta.model_type == "roberta" and roberta.pad_token_id == 1 and roberta.vocab_size == 1000
    for arch, data in (("roberta", "bert"), ("bert", "albert"), ("albert", "roberta")):
        objective = ARCH_OBJECTIVES[data]
        with pytest.raises(ShardError, match=rf"{data}/manifest\.json.*'{objective}'.*{arch} model.*"
                                             rf"'{ARCH_OBJECTIVES[arch]}'"):
            run_pretraining(_settings(family_shards[data], tmp_path / arch, arch=arch))
        assert not (tmp_path / arch / "metrics.jsonl").exists()


def test_an_arch_that_contradicts_the_checkpoint_or_config_names_both(family_shards, tmp_path):
    config = BertConfig.preset("tiny", arch="roberta", vocab_size=1000)
    (tmp_path / "config.json").write_text(config.to_json_string())
    with pytest.raises(ValueError, match=r"'albert'.*config\.json.*'roberta'"):
        run_pretraining(_settings(family_shards["roberta"], tmp_path / "a", arch="albert",
                                  config_file=str(tmp_path / "config.json")))
    BertForPreTraining(config).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"'bert'.*ckpt.*config\.json.*'roberta'"):
        run_pretraining(_settings(family_shards["roberta"], tmp_path / "b", arch="bert",
                                  init_from=str(tmp_path / "ckpt")))
    with pytest.raises(ValueError, match="unknown arch"):
        _settings(family_shards["roberta"], tmp_path / "c", arch="gpt2")


def test_cli_prepares_and_pretrains_roberta_end_to_end(tokenizers, tmp_path, capsys, one_torch_thread):
    shards, run = tmp_path / "shards", tmp_path / "run"
    assert main(["prepare", str(CORPUS), "--tokenizer", str(tokenizers["bpe"]), "--out", str(shards),
                 "--arch", "roberta", "--max-seq-len", "32"]) == 0
    assert "none objective" in capsys.readouterr().out
    assert main(["pretrain", "--data", str(shards), "--out", str(run), "--arch", "roberta", "--preset", "tiny",
                 "--max-steps", "4", "--batch-size", "8", "--eval-holdout", "16", "--log-every", "1",
                 "--no-progress", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "trained 4 steps" in out and "nsp" not in out and "sop" not in out
    assert {"vocab.json", "merges.txt", "config.json", "model.safetensors"} <= {p.name for p in run.iterdir()}
    assert not any(k.startswith(("eval_nsp", "eval_sop")) for r in read_metrics(run / "metrics.jsonl") for k in r)
    assert main(["pretrain", "--data", str(shards), "--out", str(tmp_path / "bad"), "--arch", "albert",
                 "--preset", "tiny", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json" in err and "'none'" in err and "'sop'" in err
    reference = transformers.AutoModelForMaskedLM.from_pretrained(run).eval()  # the run folder loads there too
    ours = BertForPreTraining.from_pretrained(run).eval()
    ids = torch.tensor([Tokenizer.from_pretrained(run).encode("Alice was beginning to get very tired.").ids])
    with torch.no_grad():
        expected = reference(ids).logits
        got = ours(ids, attention_mask=torch.ones_like(ids)).mlm_logits
    assert type(reference).__name__ == "RobertaForMaskedLM" and torch.allclose(got, expected, atol=1e-5)
