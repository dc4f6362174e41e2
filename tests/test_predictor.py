"""Predictor: every task family, fill-mask and embeddings agree with the model run directly, one text at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertkit.infer.embed import embed_texts
from bertkit.infer.fill_mask import fill_mask
from bertkit.infer.predictor import Predictor
from bertkit.infer.quantize import Int8FeedForward
from bertkit.model import BertForPreTraining
from bertkit.tasks.qa import decode_qa, encode_qa
from bertkit.tasks.readers import QAExample
from infer_toys import SPECS, make_model_dirs

TEXTS = ["the film was good", "bad", "alice visited paris then rome and the plot was very nice", "",
         "bob  met   carol in oslo .", "a very very long story " * 3]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    return make_model_dirs(tmp_path_factory.mktemp("infer"))


def direct(predictor: Predictor, text: str, pair: str | None = None):
    """The model's own forward on one unpadded text, truncated as the predictor does."""
    enc = predictor.tokenizer.encode(text, pair, max_length=predictor.max_length, truncation="longest_first")
    ids, types = torch.tensor([enc.ids]), torch.tensor([enc.type_ids])
    with torch.no_grad():
        return enc, predictor.model(ids, types, torch.ones_like(ids))


def test_classify_matches_the_model_text_by_text(dirs):
    p = Predictor(dirs["classify"], batch_size=4)
    results = p.classify(TEXTS)
    for text, r in zip(TEXTS, results, strict=True):
        probs = direct(p, text)[1].logits[0].softmax(-1)
        assert [r.probabilities[k] for k in ("neg", "pos")] == pytest.approx(probs.tolist(), abs=1e-5)
        assert r.label == ("neg", "pos")[int(probs.argmax())] and r.score == max(r.probabilities.values())


def test_pair_model_needs_pairs_and_matches_the_model(dirs):
    p = Predictor(dirs["pair"])
    pairs = ["yes it was", "no", "", "what colour"]
    results = p.classify(TEXTS[:4], pairs)
    for text, pair, r in zip(TEXTS[:4], pairs, results, strict=True):
        probs = direct(p, text, pair)[1].logits[0].softmax(-1)
        assert r.probabilities["yes"] == pytest.approx(float(probs[1]), abs=1e-5)
    with pytest.raises(ValueError, match="'pair': it needs pairs"):
        p.classify(TEXTS)


def test_regression_returns_the_value(dirs):
    p = Predictor(dirs["regress"])
    results = p.classify(TEXTS)
    for text, r in zip(TEXTS, results, strict=True):
        assert r.label is None and r.probabilities == {}
        assert r.score == pytest.approx(float(direct(p, text)[1].logits[0, 0]), abs=1e-5)


def test_tag_entities_follow_first_subtoken_tags_with_char_spans(dirs):
    p = Predictor(dirs["tag"], batch_size=2)
    labels = SPECS["tag"].labels
    for text, result in zip(TEXTS, p.tag(TEXTS), strict=True):
        enc, out = direct(p, text)
        best = out.logits[0].argmax(-1).tolist()
        first_tags = {}  # word start char -> tag at its first sub-token
        for position, seq in enumerate(enc.sequence_ids):
            if seq is not None:
                start = enc.offsets[position][0]
                word_start = text.rfind(" ", 0, start + 1) + 1
                first_tags.setdefault(word_start, labels[best[position]])
        for entity in result.entities:
            assert entity.text == text[entity.start:entity.end]
            assert first_tags[entity.start] == f"B-{entity.label}" or first_tags[entity.start] == f"I-{entity.label}"
        starts = {e.start for e in result.entities}
        begins = {s for s, tag in first_tags.items() if tag.startswith("B-")}
        assert begins <= starts  # every B- word opens an entity


def test_answer_matches_windowed_decoding_of_the_model(dirs):
    p = Predictor(dirs["qa"], batch_size=3)
    questions = ["what colour was the car", "who", ""]
    contexts = ["the car was red and the house was blue " * 4, "alice met bob", ""]
    results = p.answer(questions, contexts)
    examples = [QAExample(str(i), q, c) for i, (q, c) in enumerate(zip(questions, contexts, strict=True))]
    features = encode_qa(examples, p.tokenizer, max_seq_len=32, doc_stride=8, max_query_len=8)
    assert max(f.example_index for f in features) == 2 and len(features) > 4  # the long context has windows
    starts, ends = [], []
    for f in features:
        ids = torch.tensor([f.input_ids])
        with torch.no_grad():
            out = p.model(ids, torch.tensor([f.token_type_ids]), torch.ones_like(ids))
        starts.append(out.start_logits[0].numpy())
        ends.append(out.end_logits[0].numpy())
    expected = decode_qa(examples, features, starts, ends).details
    for i, r in enumerate(results):
        e = expected[str(i)]
        assert (r.text, r.start, r.end) == (e.text, e.start_char, e.end_char)
        assert r.text == contexts[i][r.start:r.end] if r.start >= 0 else r.text == ""
    assert results[2].text == "" and results[2].score is None  # nothing to answer from
    assert results[0].truncated is False and p.answer(["what " * 20], ["red car"])[0].truncated is True


def test_fill_mask_matches_the_single_text_function(dirs):
    p = Predictor(dirs["pretrained"])
    texts = ["the [MASK] was good", "alice [MASK] paris and [MASK] rome", "[MASK]"]
    model = BertForPreTraining.from_pretrained(dirs["pretrained"]).eval()
    for text, result in zip(texts, p.fill_mask(texts, top_k=3), strict=True):
        reference = fill_mask(model, p.tokenizer, text, top_k=3)
        assert [[c.token for c in m] for m in result.masks] == [[c.token for c in m] for m in reference]
        got = [[c.probability for c in m] for m in result.masks]
        assert np.allclose(got, [[c.probability for c in m] for m in reference], atol=1e-5)
    with pytest.raises(ValueError, match="text 0 has no \\[MASK\\]"):
        p.fill_mask(["no mask here"])


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_embed_matches_embed_texts(dirs, pooling):
    p = Predictor(dirs["pretrained"], batch_size=2)
    out = p.embed(TEXTS, pooling=pooling, normalize=True)
    expected = embed_texts(p.model.bert, p.tokenizer, TEXTS, pooling=pooling, batch_size=64, normalize=True)
    assert out.vectors.shape == (len(TEXTS), 32) and out.truncated == [False] * len(TEXTS)
    assert np.allclose(out.vectors, expected, atol=1e-5)


def test_long_texts_are_truncated_flagged_and_equal_to_the_cut_text(dirs):
    p = Predictor(dirs["classify"])
    long = "the film was good but the plot was awful " * 20
    enc = p.tokenizer.encode(long, max_length=p.max_length, truncation=True)
    cut = long[: enc.offsets[-2][1]]  # the text up to the last kept token
    results = p.classify([long, cut])
    assert [r.truncated for r in results] == [True, False]
    assert results[0].probabilities["pos"] == pytest.approx(results[1].probabilities["pos"], abs=1e-5)


def test_capabilities_and_errors_name_the_trained_task(dirs):
    assert Predictor(dirs["tag"]).capabilities == ("tag", "embed")
    assert Predictor(dirs["pretrained"]).capabilities == ("fill_mask", "embed")
    with pytest.raises(ValueError, match="fine-tuned for task 'classify'.*not tag"):
        Predictor(dirs["classify"]).tag(["a"])
    with pytest.raises(TypeError, match="list of strings"):
        Predictor(dirs["classify"]).classify("one string")
    with pytest.raises(ValueError, match="backend"):
        Predictor(dirs["classify"], backend="tensorrt")


def test_int8_predictor_calibrates_on_its_tokenizer_and_stays_close_to_fp32(dirs):
    fp32 = Predictor(dirs["classify"]).classify(TEXTS)
    int8 = Predictor(dirs["classify"], quantize="int8")
    assert isinstance(int8.model.bert.layers[0].ffn, Int8FeedForward)
    for exact, got in zip(fp32, int8.classify(TEXTS), strict=True):
        assert got.probabilities["pos"] == pytest.approx(exact.probabilities["pos"], abs=0.01)


PRECISIONS = [("cpu", "bf16")] + ([("cuda", "fp32"), ("cuda", "bf16")] if torch.cuda.is_available() else [])


@pytest.mark.parametrize(("device", "dtype"), PRECISIONS)
def test_device_and_dtype_follow_the_fp32_cpu_results(dirs, device, dtype):
    """Every task runs where asked and agrees with fp32 on the CPU: exactly in fp32, to bf16's ~3 digits in bf16."""
    tol = 1e-4 if dtype == "fp32" else 3e-2
    ref, got = Predictor(dirs["classify"]), Predictor(dirs["classify"], device=device, dtype=dtype)
    assert next(got.model.parameters()).dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    for exact, r in zip(ref.classify(TEXTS), got.classify(TEXTS), strict=True):
        assert r.probabilities["pos"] == pytest.approx(exact.probabilities["pos"], abs=tol)

    ref, got = Predictor(dirs["pretrained"]), Predictor(dirs["pretrained"], device=device, dtype=dtype)
    cosine = (ref.embed(TEXTS, normalize=True).vectors * got.embed(TEXTS, normalize=True).vectors).sum(1)
    assert cosine.min() > 1 - tol
    texts = ["the [MASK] was good", "alice [MASK] paris and [MASK] rome"]
    for exact, r in zip(ref.fill_mask(texts), got.fill_mask(texts), strict=True):
        assert [m[0].probability for m in r.masks] == pytest.approx([m[0].probability for m in exact.masks], abs=tol)

    questions, contexts = ["what colour was the car", "who"], ["the car was red and the house was blue " * 4, "bob"]
    ref, got = Predictor(dirs["qa"]), Predictor(dirs["qa"], device=device, dtype=dtype)
    for exact, r in zip(ref.answer(questions, contexts), got.answer(questions, contexts), strict=True):
        assert r.score == pytest.approx(exact.score, abs=tol * 10)
        if dtype == "fp32":
            assert (r.text, r.start, r.end) == (exact.text, exact.start, exact.end)

    ref, got = Predictor(dirs["tag"]), Predictor(dirs["tag"], device=device, dtype=dtype)
    for text, exact, r in zip(TEXTS, ref.tag(TEXTS), got.tag(TEXTS), strict=True):
        assert all(e.text == text[e.start:e.end] for e in r.entities)
        if dtype == "fp32":
            spans = [(e.label, e.start, e.end) for e in r.entities]
            assert spans == [(e.label, e.start, e.end) for e in exact.entities]
            assert [e.score for e in r.entities] == pytest.approx([e.score for e in exact.entities], abs=tol)


def test_device_and_dtype_apply_to_the_torch_backend_only(dirs):
    with pytest.raises(ValueError, match="dtype must be one of"):
        Predictor(dirs["classify"], dtype="int4")
    with pytest.raises(ValueError, match="quantize='int8' runs on the CPU in fp32"):
        Predictor(dirs["classify"], quantize="int8", dtype="bf16")
    with pytest.raises(ValueError, match="backend='onnx' runs on the CPU in fp32"):
        Predictor(dirs["classify"], backend="onnx", device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            Predictor(dirs["classify"], device="cuda")


@pytest.mark.parametrize("task", ["classify", "pair"])
def test_ids_only_encoding_equals_the_full_encoding(dirs, task):
    """classify / embed / fill-mask tokenize to ids only; that must cut and lay out texts exactly as encode does."""
    p = Predictor(dirs[task])
    long = "the film was good but the plot was awful " * 20
    texts = [*TEXTS, long, long]
    pairs = ["yes", long, "", "no", long, "a b c", "short", long] if task == "pair" else None
    encodings, flags = p.encode(texts, pairs)
    rows, cut = p.encode_ids(texts, pairs)
    assert cut == flags and sum(cut) >= 2
    assert [(list(ids), list(types)) for ids, types in rows] == [(e.ids, e.type_ids) for e in encodings]


def test_two_streams_give_the_results_of_one_batch_at_a_time(dirs):
    """Batches run side by side on two worker threads come back in input order, equal to the serial run."""
    texts = [f"{text} {i}" for i in range(4) for text in TEXTS]  # 24 texts, 12 batches of 2
    serial = {task: Predictor(dirs[task], batch_size=2, streams=1) for task in ("classify", "tag", "pretrained")}
    side = {task: Predictor(dirs[task], batch_size=2, streams=2) for task in serial}
    assert all(p.streams is None for p in serial.values()) and all(p.streams.count == 2 for p in side.values())
    for a, b in zip(serial["classify"].classify(texts), side["classify"].classify(texts), strict=True):
        assert b.probabilities == pytest.approx(a.probabilities, abs=1e-6)
    for a, b in zip(serial["tag"].tag(texts), side["tag"].tag(texts), strict=True):
        assert [(e.label, e.start, e.end) for e in b.entities] == [(e.label, e.start, e.end) for e in a.entities]
    vectors = side["pretrained"].embed(texts).vectors
    assert np.allclose(vectors, serial["pretrained"].embed(texts).vectors, atol=1e-6)
    assert np.allclose(vectors, embed_texts(side["pretrained"].model.bert, side["pretrained"].tokenizer, texts,
                                            batch_size=2, streams=2), atol=1e-6)


def test_streams_apply_to_the_torch_backend_on_the_cpu_only(dirs):
    with pytest.raises(ValueError, match="streams above 1 apply to the torch backend on the CPU only"):
        Predictor(dirs["classify"], backend="onnx", streams=2)
    with pytest.raises(ValueError, match="streams must be a whole number >= 1, got 0"):
        Predictor(dirs["classify"], streams=0)
    with pytest.raises(ValueError, match="streams must be a whole number >= 1, got -1"):
        p = Predictor(dirs["pretrained"])
        embed_texts(p.model.bert, p.tokenizer, TEXTS, streams=-1)
