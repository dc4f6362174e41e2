"""Byte-level BPE (RoBERTa) and SentencePiece unigram (ALBERT) tokenizers: parity with transformers' tokenizers on
vocabularies trained here, layouts, truncation, files, round trips, dispatch by files and errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import transformers

from bertkit.cli import main
from bertkit.tokenizer import ByteLevelBPETokenizer, SentencePieceTokenizer, Tokenizer, WordPieceTokenizer

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = sorted((FIXTURES / "corpus").glob("*.txt"))


def lines(name: str) -> list[str]:
    return (FIXTURES / "tokenizer" / name).read_text(encoding="utf-8").split("\n")[:-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny BPE and a tiny unigram model trained on the fixture books, saved in the standard layouts."""
    root = tmp_path_factory.mktemp("family")
    for kind in ("bpe", "unigram"):
        Tokenizer.train(CORPUS, kind=kind, vocab_size=1000).save_pretrained(root / kind)
    return {"bpe": root / "bpe", "unigram": root / "unigram"}


def reference(kind: str, folder: Path):
    """transformers' tokenizer for the folder: RobertaTokenizerFast or AlbertTokenizer (needs sentencepiece)."""
    if kind == "bpe":
        return transformers.RobertaTokenizerFast.from_pretrained(str(folder))
    return transformers.AlbertTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def pair(request, trained):
    """(ours, reference) for each scheme."""
    return Tokenizer.from_pretrained(trained[request.param]), reference(request.param, trained[request.param])


# ----- awkward text --------------------------------------------------------------------------------------------

AWKWARD = [
    "", " ", "  two  spaces  ", "\ttab\nnew line\r\n", "Café naïve résumé ÜNÏCÖDÉ", "e\u0301 and \u00e9",
    "ΟΔΟΣ İstanbul ß ﬁ", "中文字漢語 日本語のテキスト 한국어", "emoji 😀🎉👍🏽 👨\u200d👩\u200d👧 🇫🇷❤\ufe0f",
    "Paris is the <mask> of France.",
    "the<mask>x  <mask>", "<mask>", "[MASK] and <pad> </s><s> <unk>", "Hello [MASK] world [CLS][SEP]", "``quoted''",
    "\u00a0nbsp\u2003em\u3000ideographic", "zero\u200bwidth\u200djoiner\ufeff", "ctrl\x00\x07\x1b\x7f\x85 chars",
    "مرحبا שלום नमस्ते สวัสดี", "😀" * 5, "a" * 150, "  leading and trailing  ", "don't can't I'm we've",
    "$12.50 + 3,000.25 = 42% of 1e-5", "https://example.com/a?b=c&d=e#f", "ＡＢＣ①½ⅻ𝐀",
]
POOLS = ["abcdefghij ABCDEFGHIJ 0123456789", "àáâãäåçèéêëñòóôõöùúûüýÿßøæœłđş", "αβγδεζηθΣσςΩ абвгдежзЁё",
         "中文字漢語日本語東京한국어가나다あいうえおカタカナ", "😀🎉👍🏽🇫🇷❤✨🔥", ".,;:!?'\"()[]{}<>-–—…«»“”",
         "\u0300\u0301\u0308\u200b\u200d\u00ad\ufeff\x00\x1f\x7f", "<mask>[MASK]<s></s><pad><unk>``''"]


def awkward_strings(n: int, seed: int) -> list[str]:
    """The list above, then random mixtures of scripts, marks, controls, emoji, special-token text and spaces."""
    rng = np.random.default_rng(seed)
    out = list(AWKWARD)
    separators = [" ", "  ", "", "", "\t", "\n", "\u3000", "\u00a0"]
    while len(out) < n:
        chunks = ["".join(rng.choice(list(POOLS[rng.integers(len(POOLS))]), size=rng.integers(1, 8)))
                  for _ in range(rng.integers(1, 8))]
        out.append("".join(c + separators[rng.integers(len(separators))] for c in chunks))
    return out


def ours_of(tok, texts, pairs=None, **kwargs) -> list[tuple]:
    return [(e.ids, e.type_ids, e.offsets) for e in tok.encode_batch(texts, pairs, **kwargs)]


def reference_of(ref, texts, pairs=None, **kwargs) -> list[tuple]:
    out = ref(texts, pairs, return_offsets_mapping=True, return_token_type_ids=True, **kwargs)
    return [(ids, types, [tuple(o) for o in offsets]) for ids, types, offsets
            in zip(out["input_ids"], out["token_type_ids"], out["offset_mapping"], strict=True)]


def differences(inputs, ours, theirs) -> list:
    return [x for x, a, b in zip(inputs, ours, theirs, strict=True) if a != b]


# ----- parity with the reference -------------------------------------------------------------------------------

def test_singles_match_reference_ids_type_ids_and_offsets(pair):
    tok, ref = pair
    texts = lines("real_text.txt")[:600] + awkward_strings(600, seed=0)
    assert differences(texts, ours_of(tok, texts), reference_of(ref, texts)) == []


def test_pairs_match_reference(pair):
    tok, ref = pair
    real = [line.split("\t") for line in lines("real_pairs.tsv")[:300]]
    odd = awkward_strings(400, seed=1)
    # transformers drops an empty second text (it tests the pair for truth); ours keeps an empty second sequence
    pairs = [(a, b) for a, b in real + list(zip(odd[::2], odd[1::2], strict=True)) if b]
    texts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    assert differences(pairs, ours_of(tok, texts, seconds), reference_of(ref, texts, seconds)) == []


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("max_length", [9, 16, 40])
def test_truncated_pairs_match_reference(pair, strategy, max_length):
    tok, ref = pair
    short = "one two three four five six seven eight nine ten eleven"
    pairs = [line.split("\t") for line in lines("real_pairs.tsv")[:80]] + [(short, "yes"), ("no", short)]
    feasible, infeasible = [], []
    for a, b in pairs:
        la, lb = (len(ids) for ids in tok.tokenize_ids([a, b]))
        excess = la + lb + tok.num_special_tokens_to_add(pair=True) - max_length
        cut = {"only_first": la, "only_second": lb}.get(strategy)
        (infeasible if cut is not None and excess >= cut else feasible).append((a, b))
    texts, seconds = [a for a, _ in feasible], [b for _, b in feasible]
    ours = ours_of(tok, texts, seconds, max_length=max_length, truncation=strategy)
    assert differences(feasible, ours, reference_of(ref, texts, seconds, max_length=max_length,
                                                    truncation=strategy)) == []
    assert all(len(ids) <= max_length for ids, _, _ in ours)
    for a, b in infeasible[:3]:  # the reference refuses to empty the sequence it may cut; so do we
        with pytest.raises(ValueError, match="cannot remove"):
            tok.encode(a, b, max_length=max_length, truncation=strategy)


def test_truncated_singles_match_reference(pair):
    tok, ref = pair
    texts = lines("real_text.txt")[:200]
    ours = ours_of(tok, texts, max_length=12, truncation=True)
    assert differences(texts, ours, reference_of(ref, texts, max_length=12, truncation=True)) == []


def test_decode_matches_reference(pair):
    tok, ref = pair
    texts = lines("real_text.txt")[:200] + awkward_strings(200, seed=2)
    ids = [e.ids for e in tok.encode_batch(texts)]
    assert [tok.decode(row) for row in ids] == [ref.decode(row, skip_special_tokens=True) for row in ids]
    assert [tok.decode(row, skip_special_tokens=False) for row in ids] == [ref.decode(row) for row in ids]


def test_reference_settings_in_tokenizer_config_are_honoured(trained, tmp_path):
    """add_prefix_space (RoBERTa), cased ALBERT (do_lower_case false, keep_accents true): read as transformers does."""
    texts = awkward_strings(200, seed=3)
    for kind, settings in (("bpe", {"add_prefix_space": True}), ("unigram", {"do_lower_case": False,
                                                                             "keep_accents": True})):
        folder = tmp_path / kind
        shutil.copytree(trained[kind], folder)
        config = json.loads((folder / "tokenizer_config.json").read_text()) | settings
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        tok = Tokenizer.from_pretrained(folder)
        ours, theirs = ours_of(tok, texts), reference_of(reference(kind, folder), texts)
        assert differences(texts, ours, theirs) == []
        assert ours != ours_of(Tokenizer.from_pretrained(trained[kind]), texts)


def test_roberta_layout_with_mask_last_matches_reference(trained, tmp_path):
    """roberta-base keeps <mask> at the last id and ships no tokenizer_config.json beside vocab.json + merges.txt."""
    vocab = json.loads((trained["bpe"] / "vocab.json").read_text(encoding="utf-8"))
    order = [t for t in sorted(vocab, key=vocab.get) if t != "<mask>"] + ["<mask>"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(order)}), encoding="utf-8")
    shutil.copy(trained["bpe"] / "merges.txt", tmp_path / "merges.txt")
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.mask_id == len(order) - 1 and (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.encode("the <mask> of", add_special_tokens=False).tokens == ["the", "<mask>", "Ġof"]
    tok.save_pretrained(tmp_path / "saved")
    texts = awkward_strings(150, seed=4)
    assert differences(texts, ours_of(tok, texts), reference_of(reference("bpe", tmp_path / "saved"), texts)) == []


# ----- layouts, offsets, masks ---------------------------------------------------------------------------------

def test_bpe_layout_type_ids_and_mask_handling(trained):
    tok = Tokenizer.from_pretrained(trained["bpe"])
    assert isinstance(tok, ByteLevelBPETokenizer) and tok.kind == "bpe"
    assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
    enc = tok.encode("hello world", "the <mask>")
    assert enc.tokens[0] == "<s>" and enc.tokens[-1] == "</s>"
    a_end = enc.tokens.index("</s>")
    assert enc.tokens[a_end:a_end + 2] == ["</s>", "</s>"] and enc.tokens[-2] == "<mask>"
    assert enc.type_ids == [0] * len(enc) and enc.attention_mask == [1] * len(enc)
    assert enc.sequence_ids == [None] + [0] * (a_end - 1) + [None, None] + [1] * (len(enc) - a_end - 3) + [None]
    assert enc.offsets[-2] == (4, 10)  # "<mask>" without the space it absorbed
    assert "Ġ" not in tok.encode("Paris is the <mask> of France.").tokens
    assert tok.num_special_tokens_to_add() == 2 and tok.num_special_tokens_to_add(pair=True) == 4
    assert tok.build_inputs([7, 8], [9]) == ([0, 7, 8, 2, 2, 9, 2], [0] * 7)


def test_unigram_layout_and_type_ids(trained):
    tok = Tokenizer.from_pretrained(trained["unigram"])
    assert isinstance(tok, SentencePieceTokenizer) and tok.kind == "unigram"
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    enc = tok.encode("Hello world", "the [MASK]")
    sep = enc.tokens.index("[SEP]")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]" and enc.tokens[-2] == "[MASK]"
    assert enc.type_ids == [0] * (sep + 1) + [1] * (len(enc) - sep - 1)
    assert tok.num_special_tokens_to_add(pair=True) == 3
    assert tok.build_inputs([7], [8, 9]) == ([2, 7, 3, 8, 9, 3], [0, 0, 0, 1, 1, 1])


def test_bpe_offsets_slice_the_original_text_without_spaces(trained):
    tok = Tokenizer.from_pretrained(trained["bpe"])
    text = "The quick  brown fox jumped over 13 lazy dogs, unbelievably."
    enc = tok.encode(text, add_special_tokens=False)
    for token, (start, end) in zip(enc.tokens, enc.offsets, strict=True):
        assert text[start:end] == token.lstrip("Ġ")


def test_unigram_offsets_cover_the_original_words(trained):
    tok = Tokenizer.from_pretrained(trained["unigram"])
    text = "Café  NAÏVE résumé\u3000ＡＢＣ"  # (`` and '' map to their last character only, in the reference too)
    enc = tok.encode(text, add_special_tokens=False)
    words: dict[int, tuple[int, int]] = {}
    for word, (start, end) in zip(enc.word_ids, enc.offsets, strict=True):
        words[word] = (min(start, words.get(word, (start, end))[0]), max(end, words.get(word, (start, end))[1]))
    assert [text[a:b] for a, b in words.values()] == ["Café", "NAÏVE", "résumé", "ＡＢＣ"]


def test_continuation_masks(trained):
    bpe, uni = (Tokenizer.from_pretrained(trained[k]) for k in ("bpe", "unigram"))
    for tok, start in ((bpe, "Ġ"), (uni, "▁")):
        mask = tok.continuation_mask
        assert mask.shape == (tok.vocab_size,) and mask.dtype == bool and not mask.flags.writeable
        expected = [not t.startswith(start) and i not in tok.special_ids for t, i in tok.vocab.items()]
        assert mask[list(tok.vocab.values())].tolist() == expected
    assert not bpe.continuation_mask[bpe.vocab["Ġthe"]] and bpe.continuation_mask[bpe.vocab["s"]]
    assert not uni.continuation_mask[uni.vocab["▁the"]] and uni.continuation_mask[uni.vocab["s"]]


def test_batch_encode_pads_with_the_scheme_pad_id(trained):
    for kind in ("bpe", "unigram"):
        tok = Tokenizer.from_pretrained(trained[kind])
        batch = tok.batch_encode(["a b c d", "a"], ["x", "y z"], return_tensors="np")
        encs = tok.encode_batch(["a b c d", "a"], ["x", "y z"])
        width = max(len(e) for e in encs)
        assert batch["input_ids"].shape == (2, width)
        for row, types, mask, enc in zip(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], encs,
                                         strict=True):
            n = len(enc)
            assert row[:n].tolist() == enc.ids and types[:n].tolist() == enc.type_ids
            assert row[n:].tolist() == [tok.pad_id] * (width - n) and mask.tolist() == [1] * n + [0] * (width - n)


def test_tokenize_ids_equals_encode_without_special_tokens(trained):
    texts = lines("real_text.txt")[:100] + awkward_strings(100, seed=5)
    for kind in ("bpe", "unigram"):
        tok = Tokenizer.from_pretrained(trained[kind])
        assert tok.tokenize_ids(texts) == [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def test_bpe_decode_is_lossless(trained):
    tok = Tokenizer.from_pretrained(trained["bpe"])
    texts = [t for t in awkward_strings(300, seed=6) if "<" not in t]  # special-token text decodes as the token
    assert [tok.decode(tok.encode(t).ids) for t in texts] == texts


def test_unigram_decode_gives_the_normalised_text(trained):
    tok = Tokenizer.from_pretrained(trained["unigram"])
    assert tok.decode(tok.encode("The  Quick Café, said she.").ids) == "the quick cafe, said she."


# ----- files and dispatch --------------------------------------------------------------------------------------

def test_save_load_round_trips(trained, tmp_path):
    texts = lines("real_text.txt")[:100] + awkward_strings(100, seed=7)
    for kind, files, tokenizer_class in (("bpe", {"vocab.json", "merges.txt"}, "RobertaTokenizer"),
                                         ("unigram", {"spiece.model"}, "AlbertTokenizer")):
        tok = Tokenizer.from_pretrained(trained[kind])
        tok.save_pretrained(tmp_path / kind)
        assert {p.name for p in (tmp_path / kind).iterdir()} == files | {"tokenizer_config.json"}
        config = json.loads((tmp_path / kind / "tokenizer_config.json").read_text())
        assert config["tokenizer_class"] == tokenizer_class
        again = Tokenizer.from_pretrained(tmp_path / kind)
        assert type(again) is type(tok) and again.fingerprint() == tok.fingerprint()
        assert ours_of(again, texts) == ours_of(tok, texts)
        for name in files:
            assert (tmp_path / kind / name).read_bytes() == (trained[kind] / name).read_bytes()


def test_from_pretrained_picks_the_scheme_from_the_files(trained, minilm_dir, tmp_path):
    assert isinstance(Tokenizer.from_pretrained(minilm_dir), WordPieceTokenizer)
    assert isinstance(Tokenizer.from_pretrained(trained["bpe"] / "vocab.json"), ByteLevelBPETokenizer)
    assert isinstance(Tokenizer.from_pretrained(trained["unigram"] / "spiece.model"), SentencePieceTokenizer)
    assert Tokenizer.from_pretrained(minilm_dir).kind == "wordpiece"
    assert isinstance(Tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]), WordPieceTokenizer)
    both = tmp_path / "both"
    shutil.copytree(trained["unigram"], both)
    shutil.copy(minilm_dir / "vocab.txt", both / "vocab.txt")
    assert isinstance(Tokenizer.from_pretrained(both), SentencePieceTokenizer)  # tokenizer_config.json decides
    (both / "tokenizer_config.json").unlink()
    with pytest.raises(ValueError, match=r"several tokenizers \(vocab\.txt, spiece\.model\)"):
        Tokenizer.from_pretrained(both)
    (both / "config.json").write_text(json.dumps({"model_type": "albert"}))
    assert isinstance(Tokenizer.from_pretrained(both), SentencePieceTokenizer)


def test_folder_without_tokenizer_files_names_what_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        Tokenizer.from_pretrained(tmp_path)
    for name in ("vocab.txt", "vocab.json + merges.txt", "spiece.model"):
        assert name in str(err.value)


def test_fingerprints_name_the_scheme_and_track_settings(trained, tmp_path):
    bpe, uni = (Tokenizer.from_pretrained(trained[k]) for k in ("bpe", "unigram"))
    assert len({bpe.fingerprint(), uni.fingerprint()}) == 2
    assert bpe.fingerprint() != ByteLevelBPETokenizer(list(bpe.vocab), bpe.merges, add_prefix_space=True).fingerprint()
    cased = SentencePieceTokenizer((trained["unigram"] / "spiece.model").read_bytes(), lowercase=False)
    assert cased.fingerprint() != uni.fingerprint()


# ----- bad input -----------------------------------------------------------------------------------------------

def copy_bpe(trained, tmp_path) -> Path:
    folder = tmp_path / "bpe"
    shutil.copytree(trained["bpe"], folder)
    return folder


def test_missing_merges_is_named(trained, tmp_path):
    folder = copy_bpe(trained, tmp_path)
    (folder / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"merges\.txt is missing"):
        Tokenizer.from_pretrained(folder)


def test_corrupt_vocab_json_names_the_file(trained, tmp_path):
    folder = copy_bpe(trained, tmp_path)
    (folder / "vocab.json").write_text('{"<s>": 0, "<pad>": 1,', encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.json: not a valid JSON file"):
        Tokenizer.from_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({"<s>": 0, "<pad>": 1, "a": 5}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.json: token 'a' has id 5; ids must be 0 to 2"):
        Tokenizer.from_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({"<s>": 0, "<pad>": 1, "a": 1}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.json: tokens '<pad>' and 'a' share id 1"):
        Tokenizer.from_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({"<s>": 0, "<pad>": 1, "a": 2}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.json: missing special tokens <unk>, </s>, <mask>"):
        Tokenizer.from_pretrained(folder)


def test_bad_merge_line_names_file_and_line(trained, tmp_path):
    folder = copy_bpe(trained, tmp_path)
    merges = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    (folder / "merges.txt").write_text("\n".join(merges[:3] + ["Ġt"] + merges[3:]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges\.txt:4: expected two tokens"):
        Tokenizer.from_pretrained(folder)
    (folder / "merges.txt").write_text("\n".join(merges[:3] + ["Ġt zzzz"] + merges[3:]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges\.txt:4: 'zzzz', 'Ġtzzzz' not in vocab\.json"):
        Tokenizer.from_pretrained(folder)


def test_corrupt_or_foreign_spiece_model_names_the_file(trained, tmp_path):
    model = (trained["unigram"] / "spiece.model").read_bytes()
    folder = tmp_path / "uni"
    folder.mkdir()
    for data, message in ((model[:len(model) // 2], "runs past"), (b"not a model at all\n", "not a SentencePiece"),
                          (b"", "holds no pieces")):
        (folder / "spiece.model").write_bytes(data)
        with pytest.raises(ValueError, match=rf"spiece\.model: .*{message}"):
            Tokenizer.from_pretrained(folder)


def test_bpe_spiece_model_is_refused(tmp_path):
    (tmp_path / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 30, encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "text.txt"), model_prefix=str(tmp_path / "spiece"),
                                   model_type="bpe", vocab_size=40, minloglevel=2)
    with pytest.raises(ValueError, match="a SentencePiece bpe model; only unigram"):
        Tokenizer.from_pretrained(tmp_path / "spiece.model")


def test_lone_surrogates_are_an_error_naming_the_text(trained):
    tok = Tokenizer.from_pretrained(trained["bpe"])
    with pytest.raises(ValueError, match=r"text 1 holds a lone surrogate \(U\+D800\) at character 2"):
        tok.encode_batch(["fine", "ab\ud800"])


# ----- training --------------------------------------------------------------------------------------------------

def test_training_is_deterministic_and_respects_the_vocab_size():
    for kind, size in (("bpe", 400), ("unigram", 500)):
        first = Tokenizer.train(CORPUS[:1], kind=kind, vocab_size=size)
        assert first.vocab_size <= size and first.kind == kind
        assert Tokenizer.train(CORPUS[:1], kind=kind, vocab_size=size).fingerprint() == first.fingerprint()
        ids = [i for row in first.tokenize_ids(lines("real_text.txt")[:200]) for i in row]
        assert ids.count(first.unk_id) < 0.01 * len(ids)


def test_training_rejects_bad_input(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\nna\u00efve caf\u00e9\n".encode("latin-1"))
    for kind in ("bpe", "unigram"):
        with pytest.raises(ValueError, match=r"latin1\.txt:2: not valid UTF-8"):
            Tokenizer.train([CORPUS[0], bad], kind=kind, vocab_size=300)
    with pytest.raises(ValueError, match="keeps text as it is"):
        Tokenizer.train(CORPUS[:1], kind="bpe", vocab_size=300, lowercase=True)
    with pytest.raises(ValueError, match="256 byte symbols"):
        Tokenizer.train(CORPUS[:1], kind="bpe", vocab_size=200)
    with pytest.raises(ValueError, match="kind must be one of wordpiece, bpe, unigram"):
        Tokenizer.train(CORPUS[:1], kind="sentencepiece", vocab_size=300)
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no text to train on in .*blank\.txt"):
        Tokenizer.train([tmp_path / "blank.txt"], kind="unigram", vocab_size=300)


def test_cli_trains_each_kind(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 50, encoding="utf-8")
    for kind, size, cls in (("bpe", "300", ByteLevelBPETokenizer), ("unigram", "40", SentencePieceTokenizer)):
        assert main(["tokenizer", "train", str(corpus), "--kind", kind, "--vocab-size", size, "--min-frequency", "1",
                     "--out", str(tmp_path / kind)]) == 0
        assert f"{kind} vocabulary of" in capsys.readouterr().out
        tok = Tokenizer.from_pretrained(tmp_path / kind)
        assert isinstance(tok, cls) and tok.vocab_size <= int(size)
        assert tok.decode(tok.encode("the lazy fox").ids) == "the lazy fox"
