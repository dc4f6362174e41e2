"""`explain`: ids and attention are the model's, the page carries them intact, and bad input is handled."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bertkit import BertConfig, BertForPreTraining, BertModel
from bertkit.cli import main
from bertkit.infer.fill_mask import fill_mask
from bertkit.inspect.explain import explain, format_table, page_data, write_page
from bertkit.tokenizer import Tokenizer
from finetune_toys import make_pretrained_variant

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "a", "mat", "it", "was", "very",
         "happy", "dog", ".", "##s"]


def _checkpoint(directory: Path, cls=BertForPreTraining, **overrides) -> Path:
    torch.manual_seed(0)
    settings = dict(vocab_size=len(VOCAB), num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=24)
    config = BertConfig.preset("tiny", **{**settings, **overrides})
    cls(config).save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return directory


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("mlm"))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """An encoder-only checkpoint (no cls.predictions.*) with a short position table."""
    return _checkpoint(tmp_path_factory.mktemp("encoder"), cls=BertModel, max_position_embeddings=10)


def _embedded_data(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


def test_ids_segments_and_attention_are_those_of_the_model(mlm_dir):
    result = explain(mlm_dir, "the cats sat.", "it was happy.")
    assert result.tokens == ["[CLS]", "the", "cat", "##s", "sat", ".", "[SEP]", "it", "was", "happy", ".", "[SEP]"]
    assert result.type_ids == [0] * 7 + [1] * 5
    model = BertModel.from_pretrained(mlm_dir).eval()
    with torch.inference_mode():
        out = model(torch.tensor([result.ids]), torch.tensor([result.type_ids]), output_attentions=True)
    expected = torch.cat(out.attentions).numpy()  # (L, nh, T, T)
    assert result.attentions.shape == (2, 2, 12, 12)
    np.testing.assert_allclose(result.attentions, expected, atol=1e-6)
    np.testing.assert_allclose(result.attentions.sum(-1), 1.0, atol=1e-5)


def test_embedding_norms_are_the_norms_of_the_three_table_rows(mlm_dir):
    result = explain(mlm_dir, "the cat", "a dog")
    emb = BertModel.from_pretrained(mlm_dir).embeddings
    cat = result.tokens.index("cat")
    assert result.embedding_norms["token"][cat] == pytest.approx(emb.token.weight[result.ids[cat]].norm().item())
    assert result.embedding_norms["segment"][-1] == pytest.approx(emb.segment.weight[1].norm().item())
    assert result.embedding_norms["position"][3] == pytest.approx(emb.position.weight[3].norm().item())


def test_page_is_self_contained_and_its_data_decodes_to_the_attention(mlm_dir, tmp_path):
    result = explain(mlm_dir, "the cat sat on a mat </script><script>alert(1)</script>", "it was very happy")
    page = write_page(result, tmp_path / "page.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no external assets
    assert "@import" not in page and page.count("</script>") == 2  # the text cannot close the data block
    data = _embedded_data(page)
    assert data["text"] == result.text and data["tokens"] == result.tokens
    weights = np.frombuffer(base64.b64decode(data["attention"]), dtype="<u2") / 65535
    assert np.abs(weights.reshape(result.attentions.shape) - result.attentions).max() <= 0.5 / 65535 + 1e-7


def test_guesses_at_mask_tokens_equal_fill_mask(mlm_dir):
    result = explain(mlm_dir, "the [MASK] sat on a [MASK] .", top_k=3)
    assert result.guess_mode == "mask" and [g.token for g in result.guesses] == ["[MASK]", "[MASK]"]
    model = BertForPreTraining.from_pretrained(mlm_dir).eval()
    reference = fill_mask(model, Tokenizer.from_pretrained(mlm_dir), "the [MASK] sat on a [MASK] .", top_k=3)
    for guess, ref in zip(result.guesses, reference, strict=True):
        assert [t for t, _ in guess.candidates] == [c.token for c in ref]
        np.testing.assert_allclose([p for _, p in guess.candidates], [c.probability for c in ref], rtol=1e-5)


def test_without_mask_each_token_is_masked_in_turn(mlm_dir):
    result = explain(mlm_dir, "the cat sat on a mat .", top_k=4)
    assert result.guess_mode == "each"
    assert [g.position for g in result.guesses] == list(range(1, 8))  # every non-special token
    model = BertForPreTraining.from_pretrained(mlm_dir).eval()
    reference = fill_mask(model, Tokenizer.from_pretrained(mlm_dir), "the cat [MASK] on a mat .", top_k=4)[0]
    sat = result.guesses[2]
    assert sat.token == "sat" and [t for t, _ in sat.candidates] == [c.token for c in reference]
    np.testing.assert_allclose([p for _, p in sat.candidates], [c.probability for c in reference], rtol=1e-5)
    assert len(explain(mlm_dir, "the cat sat on a mat .", max_guesses=3).guesses) == 3


def test_checkpoint_without_mlm_head_still_explains_attention(encoder_dir, tmp_path):
    result = explain(encoder_dir, "the cat sat")
    assert result.guesses is None and result.attentions.shape == (2, 2, 5, 5)
    assert "no masked-LM head" in format_table(result)
    assert _embedded_data(write_page(result, tmp_path / "p.html").read_text())["mlm"] is None


def test_long_input_is_truncated_and_both_outputs_say_so(encoder_dir):
    result = explain(encoder_dir, "the cat sat on a mat", "it was very happy .")
    assert result.truncated and result.full_length == 14 and len(result.ids) == 10
    assert result.tokens.count("[SEP]") == 2 and result.type_ids[-1] == 1  # the pair is cut, not dropped
    assert "truncated: it has 14 tokens but the model reads at most 10" in format_table(result)
    assert page_data(result)["truncated"] == {"from": 14, "to": 10, "note": result.truncation_note()}
    assert page_data(explain(encoder_dir, "the cat"))["truncated"] is None


def test_cli_prints_the_table_and_writes_the_page(encoder_dir, tmp_path, capsys):
    out = tmp_path / "deep" / "page.html"
    assert main(["explain", "--model", str(encoder_dir), "the cats sat on a mat", "it was very happy .",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "WordPiece: [CLS] the cat ##s sat [SEP] it was very [SEP]"  # longest first: 7+5 -> 4+3
    row = next(line.split() for line in lines if line.split()[:2] == ["3", "##s"])
    assert row == ["3", "##s", str(VOCAB.index("##s")), "0", "3"]
    assert "warning: input truncated" in captured.err and out.is_file()


def test_cli_bad_input_is_one_line_and_exit_2(encoder_dir, tmp_path, capsys):
    assert main(["explain", "--model", str(encoder_dir), "   "]) == 2
    assert main(["explain", "--model", str(tmp_path / "nothing"), "the cat"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "bertkit explain: error: the sentence to explain is empty"
    assert "nothing" in err[1] and len(err) == 2


def test_minilm_explains_the_readme_example(minilm_dir):
    """The real uncased vocabulary: the ids are the standard ones and the page states the MLM head is absent."""
    result = explain(minilm_dir, "The cat sat on the mat.", "It was very happy.")
    assert result.ids == [101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102, 2009, 2001, 2200, 3407, 1012, 102]
    assert result.type_ids == [0] * 9 + [1] * 6
    assert result.attentions.shape == (6, 12, 15, 15) and result.guesses is None


@pytest.mark.parametrize("arch", ["roberta", "distilbert", "albert"])
def test_each_variant_is_explained_with_its_own_embeddings_positions_and_layout(arch, tmp_path):
    """RoBERTa reads positions from 2 and frames pairs <s> a </s></s> b </s>; DistilBERT has no segment part and
    is run without token types; ALBERT's parts are E wide. Attention is the model's own in each case."""
    directory = make_pretrained_variant(tmp_path / arch, arch)
    result = explain(directory, "alice visited rome", "bob met carol")
    tokenizer = Tokenizer.from_pretrained(directory)
    assert result.ids == tokenizer.encode("alice visited rome", "bob met carol").ids and not result.truncated
    model = BertModel.from_pretrained(directory).eval()
    types = None if arch == "distilbert" else torch.tensor([result.type_ids])
    with torch.inference_mode():
        out = model(torch.tensor([result.ids]), types, output_attentions=True)
    np.testing.assert_allclose(result.attentions, torch.cat(out.attentions).numpy(), atol=1e-6)
    length = len(result.ids)
    assert result.position_ids == list(range(2, 2 + length) if arch == "roberta" else range(length))
    assert set(result.embedding_norms) == ({"token", "position"} if arch == "distilbert" else
                                           {"token", "segment", "position"})
    with torch.no_grad():
        position = model.embeddings.position.weight[result.position_ids[0]].norm().item()
        token = model.embeddings.token.weight[result.ids[1]].norm().item()  # E wide for ALBERT
    assert result.embedding_norms["position"][0] == pytest.approx(position)
    assert result.embedding_norms["token"][1] == pytest.approx(token)
    data = page_data(result)
    assert data["positions"] == result.position_ids and data["special"] == [t in (tokenizer.cls_id, tokenizer.sep_id)
                                                                          for t in result.ids]
    scheme = {"roberta": "Byte-level BPE", "distilbert": "WordPiece", "albert": "SentencePiece"}[arch]
    table = format_table(result)
    assert table.startswith(f"{scheme}: ") and data["scheme"] == scheme
    if arch == "roberta":
        assert result.tokens.count("</s>") == 3 and result.type_ids == [0] * length
