"""RoBERTa, DistilBERT and ALBERT through the Predictor: torch and onnxruntime backends, every task it serves.

Each variant is a tiny random model with its own tokenizer kind (tests/finetune_toys.py). The Predictor must
give what the model itself gives on the same encodings (classification probabilities, tag and answer logits,
embeddings, fill-mask), the ONNX graph must match eager PyTorch within 1e-4 (DistilBERT's graph has no
token_type_ids input; RoBERTa's position ids are computed inside it), and int8 must run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bertkit import Predictor
from bertkit.infer.embed import embed_texts
from bertkit.infer.fill_mask import fill_mask
from bertkit.model import BertForPreTraining
from bertkit.recipes import finetune
from bertkit.recipes.finetune import FinetuneSettings, run_finetune
from bertkit.tokenizer import Tokenizer
from finetune_toys import make_pretrained_variant, sentiment_rows, write_conll, write_squad, write_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCHS = ("roberta", "distilbert", "albert")
TEXTS = ["good fine film", "a bad and dull plot that goes on", "fine"]


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Per arch: the pretrained toy directory and classify / tag / qa task directories (two steps each)."""
    root = tmp_path_factory.mktemp("infer_variants")
    data = root / "data"
    data.mkdir()
    tasks = {
        "classify": dict(train=write_table(data / "train.jsonl", sentiment_rows(32, 0)), max_seq_len=32),
        "tag": dict(train=write_conll(data / "train.conll", 16, 0), max_seq_len=32),
        "qa": dict(train=write_squad(data / "train.json", 16, 0), max_seq_len=48, doc_stride=16, max_query_len=12),
    }
    out: dict[str, dict[str, Path]] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetune, "write_report", lambda run_dir: None)
        for arch in ARCHS:
            pretrained = make_pretrained_variant(root / arch, arch)
            out[arch] = {"pretrained": pretrained}
            for task, extra in tasks.items():
                settings = FinetuneSettings(model=pretrained, out=root / f"{arch}-{task}", task=task, max_steps=2,
                                            batch_size=8, save_every=0, progress=False, **extra)
                run_finetune(settings)
                out[arch][task] = settings.out
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_classify_equals_the_models_own_probabilities(variants, arch):
    predictor = Predictor(variants[arch]["classify"])
    got = predictor.classify(TEXTS)
    model, tokenizer = predictor.model, predictor.tokenizer
    for text, result in zip(TEXTS, got, strict=True):
        enc = tokenizer.encode(text)
        types = torch.tensor([enc.type_ids]) if model.config.has_token_types else None
        with torch.inference_mode():
            probs = model(torch.tensor([enc.ids]), types).logits.softmax(-1)[0]
        expected = dict(zip(predictor.spec.labels, probs.tolist(), strict=True))
        assert result.probabilities == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_backend_matches_torch_for_every_task(variants, arch):
    for task in ("classify", "tag", "qa"):
        eager, onnx = Predictor(variants[arch][task]), Predictor(variants[arch][task], backend="onnx")
        if arch == "distilbert":
            assert "token_type_ids" not in onnx.backend.input_names
        if task == "classify":
            a, b = eager.classify(TEXTS), onnx.classify(TEXTS)
            for x, y in zip(a, b, strict=True):
                assert x.probabilities == pytest.approx(y.probabilities, abs=1e-4)
        elif task == "tag":
            assert _same_entities(eager.tag(TEXTS), onnx.tag(TEXTS))
        else:
            questions, contexts = ["who made the film"], ["the film was made by anna in paris"]
            a, b = eager.answer(questions, contexts)[0], onnx.answer(questions, contexts)[0]
            assert (a.start, a.end) == (b.start, b.end)
            assert a.score == pytest.approx(b.score, abs=1e-3)
        vectors = eager.embed(TEXTS).vectors
        np.testing.assert_allclose(onnx.embed(TEXTS).vectors, vectors, atol=1e-4)


def _same_entities(a, b) -> bool:
    return [[(e.label, e.start, e.end) for e in t.entities] for t in a] == \
        [[(e.label, e.start, e.end) for e in t.entities] for t in b]


@pytest.mark.parametrize("arch", ARCHS)
def test_embed_and_fill_mask_use_the_variants_inputs_and_mask_token(variants, arch):
    directory = variants[arch]["pretrained"]
    predictor = Predictor(directory)
    assert "fill_mask" in predictor.capabilities
    model, tokenizer = BertForPreTraining.from_pretrained(directory).eval(), Tokenizer.from_pretrained(directory)
    expected = embed_texts(model.bert, tokenizer, TEXTS)
    np.testing.assert_allclose(predictor.embed(TEXTS).vectors, expected, atol=1e-5)
    mask = tokenizer.convert_ids_to_tokens([tokenizer.mask_id])[0]
    text = f"a good {mask} film"
    got = predictor.fill_mask([text], top_k=3)[0].masks[0]
    reference = fill_mask(model, tokenizer, text, top_k=3)[0]
    assert [p.token_id for p in got] == [p.token_id for p in reference]
    with pytest.raises(ValueError, match=f"has no {re.escape(mask)} token"):
        predictor.fill_mask(["no mask here"])


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_runs_and_stays_close_to_fp32(variants, arch):
    directory = variants[arch]["pretrained"]
    fp32 = Predictor(directory).embed(TEXTS, normalize=True).vectors
    int8 = Predictor(directory, quantize="int8").embed(TEXTS, normalize=True).vectors
    cosine = (fp32 * int8).sum(-1)
    assert cosine.min() > 0.95, cosine


def test_server_answers_roberta_fill_mask_and_distilbert_classify(variants):
    from fastapi.testclient import TestClient

    from bertkit.serve.app import create_app

    roberta = Predictor(variants["roberta"]["pretrained"])
    with TestClient(create_app(roberta)) as client:
        reply = client.post("/v1/fill-mask", json={"texts": ["a good <mask> film"], "top_k": 2})
        assert reply.status_code == 200, reply.text
        expected = roberta.fill_mask(["a good <mask> film"], top_k=2)[0].masks[0]
        assert [c["token_id"] for c in reply.json()["results"][0]["masks"][0]] == [p.token_id for p in expected]
        refused = client.post("/v1/fill-mask", json={"texts": ["a good [MASK] film"]})
        assert refused.status_code == 422 and "<mask>" in refused.json()["error"]
    distilbert = Predictor(variants["distilbert"]["classify"])
    with TestClient(create_app(distilbert)) as client:
        reply = client.post("/v1/classify", json={"texts": TEXTS})
        assert reply.status_code == 200, reply.text
        got = [r["probabilities"] for r in reply.json()["results"]]
        for result, expected in zip(got, distilbert.classify(TEXTS), strict=True):
            assert result == pytest.approx(expected.probabilities, abs=1e-6)
