"""WordPiece tokenisation for BERT: load, train, encode, decode.

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
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from tokenizers import AddedToken, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as RustTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100  # longer words become [UNK], as in the original code
VOCAB_FILE, CONFIG_FILE = "vocab.txt", "tokenizer_config.json"
Truncation = bool | Literal["longest_first", "only_first", "only_second"]

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


@dataclass
class Encoding:
    """One encoded text or pair; all lists have one entry per token (length T)."""

    ids: list[int]
    type_ids: list[int]
    attention_mask: list[int]
    offsets: list[tuple[int, int]]  # char span in the original text (or pair text); (0, 0) for special tokens
    word_ids: list[int | None]  # word index within its own sequence; None for special tokens
    sequence_ids: list[int | None]  # 0 = text, 1 = pair, None = special token
    tokens: list[str]

    def __len__(self) -> int:
        return len(self.ids)


class _Pieces(NamedTuple):
    """WordPiece output for one sequence, before special tokens and truncation."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]


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
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid JSON file ({err})") from None
    settings = {}
    for key, name, allowed in (("do_lower_case", "lowercase", (True, False)),
                               ("strip_accents", "strip_accents", (True, False, None)),
                               ("tokenize_chinese_chars", "tokenize_chinese_chars", (True, False))):
        if key in data:
            if not any(data[key] is value for value in allowed):
                raise ValueError(f"{path}: {key} must be one of {allowed}, got {data[key]!r}")
            settings[name] = data[key]
    return settings


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename, so a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _training_lines(paths: list[Path], lower: bool, strip: bool, chinese: bool) -> Iterator[str]:
    """Lines of UTF-8 text files; a byte sequence that is not UTF-8 stops training with its file and line."""
    for path in paths:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"{path}:{number}: not valid UTF-8") from None
                yield line if _FAST_TEXT.fullmatch(line) else _exact_words(line, lower, strip, chinese)[0]


# ----- truncation and layout

def _strategy(truncation: Truncation) -> str | None:
    if truncation is False or truncation is None:
        return None
    if truncation is True:
        return "longest_first"
    if truncation in ("longest_first", "only_first", "only_second"):
        return truncation
    raise ValueError(f"truncation must be a bool, 'longest_first', 'only_first' or 'only_second', got {truncation!r}")


def _truncated_lengths(la: int, lb: int | None, budget: int, strategy: str) -> tuple[int, int | None]:
    """Lengths after removing tokens from the end: longest_first evens out the two sequences, then alternates."""
    excess = la + (lb or 0) - budget
    if excess <= 0:
        return la, lb
    if strategy == "only_second":
        if lb is None or lb < excess:
            raise ValueError(f"only_second cannot remove {excess} tokens from a second sequence of {lb or 0}")
        return la, lb - excess
    if strategy == "only_first" or lb is None:
        if la < excess:
            raise ValueError(f"cannot remove {excess} tokens from a first sequence of {la}")
        return la - excess, lb
    first = min(abs(la - lb), excess)  # longest_first on a pair: first even out, then alternate
    second = excess - first
    if la > lb:
        return la - first - second // 2, lb - (second - second // 2)
    return la - second // 2, lb - first - (second - second // 2)


def _frame(first: list, second: list | None, cls: Any, sep: Any, add_special: bool) -> list:
    """[CLS] first [SEP] (second [SEP]), the layout BERT was pretrained with."""
    if not add_special:
        return first + (second or [])
    return [cls, *first, sep] + ([*second, sep] if second is not None else [])


def _pad(rows: list[list[int]], width: int, fill: int) -> np.ndarray:
    """(B, width) int64 array of the rows, right-padded with `fill`."""
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for out_row, row in zip(out, rows, strict=True):
        out_row[:len(row)] = row
    return out


# ----- the tokenizer

class Tokenizer:
    """BERT WordPiece tokenizer; build it with `from_pretrained` or `train`."""

    def __init__(self, tokens: Sequence[str], *, lowercase: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, source: str = "vocabulary") -> None:
        self._tokens = list(tokens)
        self._ids = {token: i for i, token in enumerate(self._tokens)}
        missing = [t for t in SPECIAL_TOKENS if t not in self._ids]
        if missing:
            raise ValueError(f"{source}: missing special tokens {', '.join(missing)}")
        if len(self._ids) != len(self._tokens):
            raise ValueError(f"{source}: repeated tokens")
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents  # as the original code
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self._ids[t] for t in SPECIAL_TOKENS)
        self.special_ids = frozenset((self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id))
        self._fast = self._rust_pipeline(exact=False)
        self._exact = self._rust_pipeline(exact=True)
        self._continuation = np.array([t.startswith("##") for t in self._tokens], dtype=bool)
        self._continuation.flags.writeable = False

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

    # ----- loading and saving -----------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a directory holding vocab.txt (and optionally tokenizer_config.json), or a vocab.txt path."""
        path = Path(path)
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
        _write_atomic(directory / VOCAB_FILE, "".join(t + "\n" for t in self._tokens))
        _write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")

    @classmethod
    def train(cls, files: Iterable[str | os.PathLike], *, vocab_size: int = 30522, min_frequency: int = 2,
              lowercase: bool = True, strip_accents: bool | None = None) -> Tokenizer:
        """Learn a WordPiece vocabulary (at most `vocab_size` tokens) from UTF-8 text files.

        Special tokens take ids 0-4 ([PAD] [UNK] [CLS] [SEP] [MASK]). A file that is not UTF-8 is an error naming
        the file and line, rather than a silent skip: a half-read corpus would go unnoticed.
        """
        paths = [Path(f) for f in files]
        if not paths:
            raise ValueError("train needs at least one text file")
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"training file not found: {path}")
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
        """sha256 over the vocabulary and normalisation: equal fingerprints give equal ids for any text."""
        state = {"format": 1, "vocab": self._tokens, "lowercase": self.lowercase, "strip_accents": self.strip_accents,
                 "tokenize_chinese_chars": self.tokenize_chinese_chars, "max_word_chars": MAX_WORD_CHARS}
        return hashlib.sha256(json.dumps(state, ensure_ascii=False).encode("utf-8")).hexdigest()

    # ----- vocabulary -------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def vocab(self) -> dict[str, int]:
        return dict(self._ids)

    @property
    def continuation_mask(self) -> np.ndarray:
        """(vocab_size,) bool, True for "##" pieces that continue a word (whole-word masking needs it)."""
        return self._continuation

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._tokens[self._checked_id(i)] for i in ids]

    def _checked_id(self, i: Any) -> int:
        i = int(i)
        if not 0 <= i < len(self._tokens):
            raise ValueError(f"token id {i} outside the vocabulary (size {len(self._tokens)})")
        return i

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

    @staticmethod
    def _check_batch(texts: Sequence[str], pairs: Sequence[str] | None) -> tuple[list[str], list[str] | None]:
        if isinstance(texts, str) or isinstance(pairs, str):
            raise TypeError("batch methods take lists of str; use encode for a single text")
        texts, pairs = list(texts), None if pairs is None else list(pairs)
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        return texts, pairs

    def encode(self, text: str, pair: str | None = None, *, max_length: int | None = None,
               truncation: Truncation = False, add_special_tokens: bool = True) -> Encoding:
        """Encode a text, or a text pair as [CLS] text [SEP] pair [SEP]."""
        pairs = None if pair is None else [pair]
        return self.encode_batch([text], pairs, max_length=max_length, truncation=truncation,
                                 add_special_tokens=add_special_tokens)[0]

    def encode_batch(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                     max_length: int | None = None, truncation: Truncation = False,
                     add_special_tokens: bool = True) -> list[Encoding]:
        """Encode many texts (and pairs) at once; truncation applies only when `max_length` is given."""
        texts, pairs = self._check_batch(texts, pairs)
        strategy = _strategy(truncation)
        pieces = self._pieces(texts + (pairs or []))
        seconds: list[_Pieces | None] = pieces[len(texts):] if pairs is not None else [None] * len(texts)
        return [self._assemble(i, a, b, max_length, strategy, add_special_tokens)
                for i, (a, b) in enumerate(zip(pieces[:len(texts)], seconds, strict=True))]

    def _lengths(self, index: int, la: int, lb: int | None, max_length: int | None, strategy: str | None,
                 add_special: bool) -> tuple[int, int | None]:
        """Sequence lengths after truncation; an over-long encoding without truncation is an error."""
        n_special = (2 if lb is None else 3) if add_special else 0
        total = la + (lb or 0) + n_special
        if max_length is None or total <= max_length:
            return la, lb
        if max_length < n_special:
            raise ValueError(f"max_length={max_length} is shorter than the {n_special} special tokens")
        if strategy is None:
            raise ValueError(f"text {index} encodes to {total} tokens, more than max_length={max_length}; "
                             "pass truncation=True to cut it")
        return _truncated_lengths(la, lb, max_length - n_special, strategy)

    def _assemble(self, index: int, a: _Pieces, b: _Pieces | None, max_length: int | None, strategy: str | None,
                  add_special: bool) -> Encoding:
        """Truncate, then lay out [CLS] a [SEP] b [SEP] with type ids, offsets and word ids."""
        la, lb = self._lengths(index, len(a.ids), None if b is None else len(b.ids), max_length, strategy,
                               add_special)

        def cut(field: str, cls: Any, sep: Any) -> list:
            second = None if b is None else getattr(b, field)[:lb]
            return _frame(getattr(a, field)[:la], second, cls, sep, add_special)

        sequence_ids = _frame([0] * la, None if b is None else [1] * lb, None, None, add_special)
        n_second = 0 if b is None else lb + add_special  # the second sequence and its [SEP] have type 1
        return Encoding(ids=cut("ids", self.cls_id, self.sep_id),
                        type_ids=[0] * (len(sequence_ids) - n_second) + [1] * n_second,
                        attention_mask=[1] * len(sequence_ids), offsets=cut("offsets", (0, 0), (0, 0)),
                        word_ids=cut("word_ids", None, None), sequence_ids=sequence_ids,
                        tokens=cut("tokens", "[CLS]", "[SEP]"))

    def batch_encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                     max_length: int | None = 128, truncation: Truncation = "longest_first",
                     padding: Literal["longest", "max_length", False] = "longest",
                     return_tensors: Literal["pt", "np"] | None = "pt") -> dict[str, Any]:
        """Model inputs for a batch: input_ids, token_type_ids, attention_mask, each (B, T) when padded."""
        if padding not in ("longest", "max_length", False):
            raise ValueError(f"padding must be 'longest', 'max_length' or False, got {padding!r}")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        texts, pairs = self._check_batch(texts, pairs)
        strategy = _strategy(truncation)
        ids = self.tokenize_ids(texts + (pairs or []))  # the light path: no offsets, tokens or word ids
        seconds = ids[len(texts):] if pairs is not None else [None] * len(texts)
        rows, types = [], []
        for i, (a, b) in enumerate(zip(ids[:len(texts)], seconds, strict=True)):
            la, lb = self._lengths(i, len(a), None if b is None else len(b), max_length, strategy, True)
            rows.append(_frame(a[:la], None if b is None else b[:lb], self.cls_id, self.sep_id, True))
            types.append([0] * (la + 2) + [1] * (len(rows[-1]) - la - 2))
        columns = {"input_ids": rows, "token_type_ids": types, "attention_mask": [[1] * len(r) for r in rows]}
        if padding is False and return_tensors is None:
            return columns
        if padding is False and len({len(r) for r in rows}) > 1:
            raise ValueError("padding=False with return_tensors needs texts of equal token length")
        width = max_length if padding == "max_length" else max(map(len, rows), default=0)
        batch = {key: _pad(values, width, self.pad_id if key == "input_ids" else 0) for key, values in columns.items()}
        if return_tensors == "pt":
            import torch
            return {key: torch.from_numpy(array) for key, array in batch.items()}
        return batch if return_tensors == "np" else {key: array.tolist() for key, array in batch.items()}

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
