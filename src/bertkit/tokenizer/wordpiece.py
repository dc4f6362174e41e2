"""WordPiece tokenisation for BERT (and DistilBERT): load vocab.txt, train, encode, decode.

The sub-word step runs in the Rust `tokenizers` library. Its BERT normaliser, though, disagrees with the original
BERT code on rare text (Python lower-cases before stripping accents, applies NFC, and uses Python's Unicode tables;
the Rust side does not), and a model only sees the ids it was trained on. So each text takes one of two paths:

* fast path: text made only of characters on which both normalisers provably agree (see `_FAST_BLOCKS`, checked
  exhaustively in the tests) goes straight to the Rust pipeline;
* exact path: any other text is normalised in Python exactly as the original code does, keeping for every
  normalised character the span of original characters it came from, and only the WordPiece step runs in Rust.

Special-token strings in the text ("[MASK]", ...) become their special ids, as in the reference tokenizer.
Offsets are character offsets into the caller's original text on both paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as RustTokenizer

from bertkit.files import write_text
from bertkit.tokenizer.base import CONFIG_FILE, Tokenizer, _Pieces, read_config, utf8_lines

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100  # longer words become [UNK], as in the original code
VOCAB_FILE = "vocab.txt"

# Blocks where the Rust normaliser may be used, per character filtered by `_fast_char`: Latin, Greek, Cyrillic,
# punctuation and symbols, CJK punctuation and kana, CJK ideographs, Hangul syllables, full-width forms, emoji.
_FAST_BLOCKS = ((0x20, 0x52F), (0x1E00, 0x1EFF), (0x2000, 0x2BFF), (0x3000, 0x30FF), (0x4E00, 0x9FFF),
                (0xAC00, 0xD7A3), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF))


def _fast_char(ch: str) -> bool:
    """Whether the Rust normaliser treats `ch` like the original code, whatever its neighbours.

    Excluded: control/format/unassigned characters (removing them can join a special-token string, and the
    Unicode tables differ), combining marks (they compose with the previous character under NFC), characters
    NFC changes, and capital sigma (Python lower-cases it to a final sigma by context).
    """
    return unicodedata.category(ch)[0] not in "CM" and ch != "Σ" and unicodedata.is_normalized("NFC", ch)


def _fast_text_pattern() -> re.Pattern[str]:
    runs: list[list[int]] = []  # [first, last] code points of consecutive fast characters
    for cp in (cp for lo, hi in _FAST_BLOCKS for cp in range(lo, hi + 1) if _fast_char(chr(cp))):
        if runs and runs[-1][1] == cp - 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    ranges = "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in runs)
    return re.compile(f"[\t\n\r{ranges}]*")


_FAST_TEXT = _fast_text_pattern()
_DECODE_JOINS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                 (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


# ----- exact path: the original BERT basic tokenizer, with an alignment back to the original characters.

def _is_punctuation(ch: str) -> bool:
    """ASCII non-alphanumerics count as punctuation too ("$", "^", "`"), as in the original code."""
    cp = ord(ch)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or \
        unicodedata.category(ch)[0] == "P"


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def _strip_marks(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _raw_tokens(text: str, base: int, chinese: bool) -> Iterator[tuple[str, list[int]]]:
    """Drop control characters, split at whitespace, isolate CJK ideographs; yield (token, original indices)."""
    chars: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        category = unicodedata.category(ch)
        if ch == "\ufffd" or (category[0] == "C" and ch not in "\t\n\r"):  # NUL is a control character too
            continue
        cjk = chinese and _is_cjk(ord(ch))
        if cjk or ch.isspace():  # the original's whitespace (" ", tab, CR, LF, Zs) and its str.split() extras
            if chars:
                yield "".join(chars), where
                chars, where = [], []
            if cjk:
                yield ch, [base + i]
        else:
            chars.append(ch)
            where.append(base + i)
    if chars:
        yield "".join(chars), where


def _nfc_groups(token: str, where: list[int]) -> list[tuple[str, int, int]]:
    """NFC per group of original characters that compose together: (nfc text, first index, end index)."""
    groups: list[list[Any]] = []  # [raw text, first index, end index]
    for ch, i in zip(token, where, strict=True):
        nfc = unicodedata.normalize
        if groups and (unicodedata.combining(ch) or nfc("NFC", groups[-1][0] + ch) != nfc("NFC", groups[-1][0])
                       + nfc("NFC", ch)):
            groups[-1][0] += ch
            groups[-1][2] = i + 1
        else:
            groups.append([ch, i, i + 1])
    return [(unicodedata.normalize("NFC", raw), lo, hi) for raw, lo, hi in groups]


def _normalize_token(token: str, where: list[int], lower: bool, strip: bool) -> list[tuple[str, int, int]]:
    """NFC, lower-case and accent stripping of one whitespace token, as groups (text, first, end index)."""
    nfc = unicodedata.normalize("NFC", token)
    expected = nfc.lower() if lower else nfc
    expected = _strip_marks(expected) if strip else expected
    groups = _nfc_groups(token, where)
    if lower:  # lower-case the whole token (final sigma depends on context), then cut it back into groups
        cuts = list(accumulate((len(text.lower()) for text, _, _ in groups), initial=0))
        whole = nfc.lower()
        if cuts[-1] == len(whole):
            groups = [(whole[a:b], lo, hi) for (_, lo, hi), a, b in zip(groups, cuts[:-1], cuts[1:], strict=True)]
    if strip:
        groups = [(_strip_marks(text), lo, hi) for text, lo, hi in groups]
    if "".join(text for text, _, _ in groups) != expected:  # pathological mark orderings: one coarse group
        groups = [(expected, where[0], where[-1] + 1)]
    return groups


def _split_punctuation(groups: list[tuple[str, int, int]]) -> list[list[tuple[str, int, int]]]:
    """Every punctuation character becomes a word of its own; words are lists of (char, first, end index)."""
    words: list[list[tuple[str, int, int]]] = []
    new_word = True
    for text, lo, hi in groups:
        for ch in text:
            if _is_punctuation(ch):
                words.append([(ch, lo, hi)])
                new_word = True
            else:
                if new_word:
                    words.append([])
                new_word = False
                words[-1].append((ch, lo, hi))
    return words


def _exact_words(text: str, lower: bool, strip: bool, chinese: bool) -> tuple[str, list[int], list[int]]:
    """Normalise `text` as the original BERT code and join its words with single spaces.

    Returns (normalised text of length N, starts (N,), ends (N,)): normalised char k came from text[starts[k]:ends[k]].
    """
    words: list[list[tuple[str, int, int]]] = []
    base = 0
    for k, part in enumerate(_SPECIAL_SPLIT.split(text)):
        if k % 2:  # a special-token string: never normalised or split
            words.append([(ch, base, base + len(part)) for ch in part])
        for token, where in ([] if k % 2 else _raw_tokens(part, base, chinese)):
            if unicodedata.normalize("NFC", token) in SPECIAL_TOKENS:
                words.append([(ch, where[0], where[-1] + 1) for ch in unicodedata.normalize("NFC", token)])
            else:
                words.extend(_split_punctuation(_normalize_token(token, where, lower, strip)))
        base += len(part)
    chars = [c for word in words for c in word + [(" ", 0, 0)]][:-1]
    return "".join(c for c, _, _ in chars), [lo for _, lo, _ in chars], [hi for _, _, hi in chars]


# ----- files

def _read_vocab(path: Path) -> list[str]:
    """One token per line, id = line number - 1; empty or repeated tokens are errors."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    tokens = [line.removesuffix("\r") for line in lines]
    first_line: dict[str, int] = {}
    for number, token in enumerate(tokens, start=1):
        if not token:
            raise ValueError(f"{path}:{number}: empty token")
        if token in first_line:
            raise ValueError(f"{path}:{number}: token {token!r} already on line {first_line[token]}")
        first_line[token] = number
    return tokens


def _read_config(path: Path) -> dict[str, Any]:
    """Normalisation settings from tokenizer_config.json (standard key names); missing file = uncased BERT."""
    names = {"do_lower_case": "lowercase", "strip_accents": "strip_accents",
             "tokenize_chinese_chars": "tokenize_chinese_chars"}
    settings = read_config(path, tuple(names), nullable=("strip_accents",))
    return {names[key]: value for key, value in settings.items()}


def _training_lines(paths: list[Path], lower: bool, strip: bool, chinese: bool) -> Iterator[str]:
    """Lines of UTF-8 text files, those off the fast path normalised in Python as the original code does."""
    for line in utf8_lines(paths):
        yield line if _FAST_TEXT.fullmatch(line) else _exact_words(line, lower, strip, chinese)[0]


# ----- the tokenizer

class WordPieceTokenizer(Tokenizer):
    """BERT's WordPiece tokenizer with the original code's normalisation; `Tokenizer(tokens, ...)` builds one."""

    kind = "wordpiece"
    files = (VOCAB_FILE,)
    description = "WordPiece"
    default_vocab_size = 30522

    def __init__(self, tokens: Sequence[str], *, lowercase: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, source: str = "vocabulary") -> None:
        self._set_vocabulary(tokens, SPECIAL_TOKENS, source)
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents  # as the original code
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self._fast = self._rust_pipeline(exact=False)
        self._exact = self._rust_pipeline(exact=True)
        self._set_continuation(t.startswith("##") for t in self._tokens)

    def _rust_pipeline(self, exact: bool) -> RustTokenizer:
        """Fast: the whole BERT pipeline in Rust. Exact: input already normalised and split by `_exact_words`."""
        rust = RustTokenizer(models.WordPiece(self._ids, unk_token="[UNK]", max_input_chars_per_word=MAX_WORD_CHARS))
        if exact:
            rust.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
            return rust
        rust.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=self.tokenize_chinese_chars,
            strip_accents=self.strip_accents, lowercase=self.lowercase)
        rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        rust.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
        return rust

    # ----- loading, saving, training ----------------------------------------------------------------------------

    @classmethod
    def _load(cls, path: Path) -> WordPieceTokenizer:
        """A folder holding vocab.txt (and optionally tokenizer_config.json), or a vocab.txt path."""
        vocab_path = path / VOCAB_FILE if path.is_dir() else path
        if not vocab_path.is_file():
            raise FileNotFoundError(f"no vocabulary file at {vocab_path}")
        settings = _read_config(vocab_path.parent / CONFIG_FILE)
        return cls(_read_vocab(vocab_path), source=str(vocab_path), **settings)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write vocab.txt and tokenizer_config.json in the standard layout (atomically, file by file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.lowercase,
                  "strip_accents": self.strip_accents, "tokenize_chinese_chars": self.tokenize_chinese_chars,
                  "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}
        write_text(directory / VOCAB_FILE, "".join(t + "\n" for t in self._tokens))
        write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")

    @classmethod
    def _train(cls, paths: list[Path], *, vocab_size: int, min_frequency: int, lowercase: bool | None,
               strip_accents: bool | None) -> WordPieceTokenizer:
        """Special tokens take ids 0-4 ([PAD] [UNK] [CLS] [SEP] [MASK]), learned pieces follow."""
        lowercase = True if lowercase is None else lowercase
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size={vocab_size} leaves no room beside the {len(SPECIAL_TOKENS)} special tokens")
        shell = cls(SPECIAL_TOKENS, lowercase=lowercase, strip_accents=strip_accents)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        lines = _training_lines(paths, shell.lowercase, shell.strip_accents, shell.tokenize_chinese_chars)
        shell._fast.train_from_iterator(lines, trainer=trainer)
        # The trainer numbers tokens in hash-map order, which changes from run to run, so we order them ourselves:
        # specials, then by length, then text. Its tie-breaking between equally frequent merges is hash-ordered
        # too, so two runs can still differ in a few rare tokens: keep the vocab.txt a run was prepared with.
        learned = sorted(set(shell._fast.get_vocab()) - set(SPECIAL_TOKENS), key=lambda t: (len(t), t))
        return cls([*SPECIAL_TOKENS, *learned], lowercase=lowercase, strip_accents=strip_accents)

    def fingerprint(self) -> str:
        """sha256 over the vocabulary and normalisation: equal fingerprints give equal ids for any text.

        The hashed state has no "kind" (it predates the other schemes, whose states name theirs), so shard sets
        prepared before the family grew keep their fingerprints; the key sets differ, so schemes never collide.
        """
        state = {"format": 1, "vocab": self._tokens, "lowercase": self.lowercase, "strip_accents": self.strip_accents,
                 "tokenize_chinese_chars": self.tokenize_chinese_chars, "max_word_chars": MAX_WORD_CHARS}
        return hashlib.sha256(json.dumps(state, ensure_ascii=False).encode("utf-8")).hexdigest()

    # ----- encoding ---------------------------------------------------------------------------------------------

    def _rust_encode(self, texts: Sequence[str]) -> list[tuple[Any, tuple[list[int], list[int]] | None]]:
        """Rust encodings of single texts, no special tokens, each with its exact-path alignment (or None)."""
        fast, exact = [], []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is a {type(text).__name__}, expected str")
            (fast if _FAST_TEXT.fullmatch(text) else exact).append(i)
        out: list[Any] = [None] * len(texts)
        for i, enc in zip(fast, self._fast.encode_batch([texts[i] for i in fast], add_special_tokens=False),
                          strict=True):
            out[i] = (enc, None)
        normalised = [_exact_words(texts[i], self.lowercase, self.strip_accents, self.tokenize_chinese_chars)
                      for i in exact]
        encs = self._exact.encode_batch([n[0] for n in normalised], add_special_tokens=False)
        for i, (_, starts, ends), enc in zip(exact, normalised, encs, strict=True):
            out[i] = (enc, (starts, ends))
        return out

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens or truncation (the pretraining data path)."""
        return [enc.ids for enc, _ in self._rust_encode(texts)]

    def _pieces(self, texts: Sequence[str]) -> list[_Pieces]:
        pieces = []
        for enc, alignment in self._rust_encode(texts):
            offsets = enc.offsets
            if alignment is not None:
                starts, ends = alignment
                offsets = [(starts[a], ends[b - 1]) for a, b in offsets]
            pieces.append(_Pieces(enc.ids, enc.tokens, offsets, enc.word_ids))
        return pieces

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text from ids: "##" pieces rejoin their word and spaces before punctuation and clitics go.

        Normalisation cannot be undone: an uncased model decodes to lower-case text without accents.
        """
        ids = [self._checked_id(i) for i in ids]
        tokens = [self._tokens[i] for i in ids if not (skip_special_tokens and i in self.special_ids)]
        text = " ".join(tokens).replace(" ##", "").strip()
        for spaced, joined in _DECODE_JOINS:
            text = text.replace(spaced, joined)
        return text
