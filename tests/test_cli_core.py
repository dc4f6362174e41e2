"""The core commands, run through ``bertkit.cli.main`` as a user would."""

import shutil

import numpy as np
import pytest
import torch

from bertkit import BertConfig, BertForPreTraining, BertModel, Tokenizer
from bertkit.cli import main
from bertkit.infer.embed import embed_texts
from pictures import assert_drawn_png


@pytest.fixture(scope="module")
def tiny_mlm_dir(tmp_path_factory, minilm_dir):
    """A random tiny BERT with an MLM head and the MiniLM vocabulary."""
    out = tmp_path_factory.mktemp("tiny_mlm")
    torch.manual_seed(0)
    BertForPreTraining(BertConfig.preset("tiny", max_position_embeddings=64)).save_pretrained(out)
    shutil.copy(minilm_dir / "vocab.txt", out / "vocab.txt")
    return out


def test_info_prints_shape_and_parameter_count(minilm_dir, capsys):
    assert main(["info", str(minilm_dir)]) == 0
    out = capsys.readouterr().out
    assert "hidden_size              384" in out
    assert "parameters               22713216" in out  # 22,713,216 incl. the position_ids buffer excluded
    assert "vocab_size               30522" in out
    assert "model_type               bert" in out and "architecture             BertModel" in out
    assert "tokenizer                wordpiece (WordPiece), 30522 entries, vocab.txt" in out


def test_fill_mask_lists_top_k_with_probabilities(tiny_mlm_dir, capsys):
    assert main(["fill-mask", "--model", str(tiny_mlm_dir), "--top-k", "3", "the cat sat on the [MASK]."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[MASK] #1" and len(lines) == 4
    probs = [float(line.split()[-1]) for line in lines[1:]]
    assert probs == sorted(probs, reverse=True) and all(0 < p < 1 for p in probs)


def test_fill_mask_without_mlm_head_is_a_clear_error(minilm_dir, capsys):
    assert main(["fill-mask", "--model", str(minilm_dir), "paris is the [MASK] of france."]) == 2
    assert "has no masked-LM head" in capsys.readouterr().err


def test_fill_mask_without_mask_token_is_a_clear_error(tiny_mlm_dir, capsys):
    assert main(["fill-mask", "--model", str(tiny_mlm_dir), "no mask here"]) == 2
    assert "no [MASK] token" in capsys.readouterr().err


def test_embed_writes_one_row_per_line_in_input_order(minilm_dir, tmp_path):
    texts = ["a short one.", "a much longer sentence about the weather in the mountains today.", "hello"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["embed", "--model", str(minilm_dir), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "out.npy"), "--pooling", "cls"]) == 0
    vectors = np.load(tmp_path / "out.npy")
    assert vectors.shape == (3, 384)
    model = BertModel.from_pretrained(minilm_dir).eval()
    tok = Tokenizer.from_pretrained(minilm_dir)
    with torch.inference_mode():
        one = model(torch.tensor([tok.encode(texts[1]).ids])).last_hidden_state[0, 0].numpy()
    assert np.abs(vectors[1] - one).max() < 1e-4


def test_embed_mean_pooling_ignores_padding(minilm_dir):
    model = BertModel.from_pretrained(minilm_dir).eval()
    tok = Tokenizer.from_pretrained(minilm_dir)
    texts = ["tiny", "a considerably longer sentence that forces padding on the short one"]
    batched = embed_texts(model, tok, texts, pooling="mean")
    alone = embed_texts(model, tok, texts[:1], pooling="mean")
    assert np.abs(batched[0] - alone[0]).max() < 1e-5


def test_embed_truncates_long_lines_and_warns(tiny_mlm_dir, tmp_path, caplog):
    (tmp_path / "in.txt").write_text("word " * 200 + "\nshort\n", encoding="utf-8")
    assert main(["embed", "--model", str(tiny_mlm_dir), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "out.npy")]) == 0
    assert "longer than 64 tokens were truncated (first: line 1)" in caplog.text
    assert np.load(tmp_path / "out.npy").shape == (2, 128)


def test_embed_missing_input_fails_without_writing(minilm_dir, tmp_path, capsys):
    assert main(["embed", "--model", str(minilm_dir), "--input", str(tmp_path / "nope.txt"),
                 "--output", str(tmp_path / "out.npy")]) == 2
    assert "nope.txt: no such input file" in capsys.readouterr().err
    assert not (tmp_path / "out.npy").exists()


def test_tokenizer_train_writes_a_loadable_vocab(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 50, encoding="utf-8")
    assert main(["tokenizer", "train", str(corpus), "--vocab-size", "120", "--min-frequency", "1",
                 "--out", str(tmp_path / "tok")]) == 0
    tok = Tokenizer.from_pretrained(tmp_path / "tok")
    assert tok.vocab_size <= 120
    assert tok.decode(tok.encode("the lazy fox").ids) == "the lazy fox"


def test_embed_plot_writes_a_png(minilm_dir, tmp_path):
    (tmp_path / "in.txt").write_text("cats purr.\ndogs bark.\nstocks fell today.\nmarkets rallied.\n", encoding="utf-8")
    assert main(["embed", "--model", str(minilm_dir), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "out.npy"), "--plot", str(tmp_path / "map.png")]) == 0
    assert_drawn_png((tmp_path / "map.png").read_bytes(), 400, 300)
