"""What every tokenizer of the BERT family shares: the public API, pair layout, truncation, padding, dispatch.

A scheme (WordPiece, byte-level BPE, SentencePiece unigram) supplies the sub-word pieces of single texts, its
vocabulary and special tokens, and its files. This module lays the pieces out in the architecture's format
(``[CLS] a [SEP] b [SEP]`` with token types 0/1, or RoBERTa's ``<s> a </s></s> b </s>`` with types all 0),
truncates and pads them, and picks the scheme from the files of a directory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
from tokenizers import Tokenizer as RustTokenizer

from bertkit.variants import VARIANTS, class_variant

CONFIG_FILE = "tokenizer_config.json"
Truncation = bool | Literal["longest_first", "only_first", "only_second"]
Kind = Literal["wordpiece", "bpe", "unigram"]
KINDS = ("wordpiece", "bpe", "unigram")
_SURROGATE = re.compile("[\ud800-\udfff]")
# tokenizer_config.json's tokenizer_class -> scheme, beyond the model variants' own classes (bertkit.variants)
_OTHER_CLASSES = {"GPT2": "bpe"}


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
    """Sub-word pieces of one sequence, before special tokens and truncation."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]


# ----- files

def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid JSON file ({err})") from None


def read_config(path: Path, keys: Sequence[str], nullable: Sequence[str] = ()) -> dict[str, bool | None]:
    """The boolean settings `keys` present in tokenizer_config.json (standard key names); no file = defaults.

    Keys in `nullable` may also be null (WordPiece's ``strip_accents``: null means "follow lowercasing").
    """
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    settings = {}
    for key in keys:
        if key in data:
            if not (isinstance(data[key], bool) or (data[key] is None and key in nullable)):
                allowed = "true, false or null" if key in nullable else "true or false"
                raise ValueError(f"{path}: {key} must be {allowed}, got {data[key]!r}")
            settings[key] = data[key]
    return settings


def added_tokens_config(tokens: Sequence[str], ids: dict[str, int], lstrip: Sequence[str] = ()) -> dict[str, Any]:
    """tokenizer_config.json's added_tokens_decoder: how the reference treats each special string in text."""
    return {str(ids[t]): {"content": t, "lstrip": t in lstrip, "normalized": False, "rstrip": False,
                          "single_word": False, "special": True} for t in sorted(tokens, key=ids.__getitem__)}


def check_training_files(files: Iterable[str | os.PathLike]) -> list[Path]:
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("train needs at least one text file")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"training file not found: {path}")
    return paths


def utf8_lines(paths: Sequence[Path]) -> Iterator[str]:
    """Lines of UTF-8 text files; a byte sequence that is not UTF-8 stops training with its file and line."""
    for path in paths:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"{path}:{number}: not valid UTF-8") from None


# ----- truncation and layout

def _strategy(truncation: Truncation) -> str | None:
    if truncation is False or truncation is None:
        return None
    if truncation is True:
        return "longest_first"
    if truncation in ("longest_first", "only_first", "only_second"):
        return truncation
    raise ValueError(f"truncation must be a bool, 'longest_first', 'only_first' or 'only_second', got {truncation!r}")


def _truncated_lengths(la: int, lb: int | None, budget: int, strategy: str, rule: str) -> tuple[int, int | None]:
    """Lengths after removing tokens from the end.

    Two rules, each its reference's: "bert" (the original BERT code) removes one token at a time from the longer
    sequence, the second on ties, and may empty a sequence; "tokenizers" (the Rust library behind RoBERTa's and
    ALBERT's reference tokenizers) gives each of two long sequences half the budget, the longer (on ties the
    second) the odd token, and refuses to empty the sequence `only_first` / `only_second` cut.
    """
    excess = la + (lb or 0) - budget
    if excess <= 0:
        return la, lb
    keep = int(rule == "tokenizers")
    if strategy == "only_second":
        if lb is None or lb < excess + keep:
            raise ValueError(f"only_second cannot remove {excess} tokens from a second sequence of {lb or 0}")
        return la, lb - excess
    if strategy == "only_first" or lb is None:
        if la < excess + (keep if strategy == "only_first" else 0):
            raise ValueError(f"cannot remove {excess} tokens from a first sequence of {la}")
        return la - excess, lb
    if rule == "tokenizers":
        short, long = sorted((la, lb))
        if short > budget // 2:  # both are cut
            short, long = budget // 2, budget - budget // 2
        else:
            long = budget - short
        return (long, short) if la > lb else (short, long)
    first = min(abs(la - lb), excess)  # longest_first on a pair: first even out, then alternate
    second = excess - first
    if la > lb:
        return la - first - second // 2, lb - (second - second // 2)
    return la - second // 2, lb - first - (second - second // 2)


def _pad(rows: list[list[int]], width: int, fill: int) -> np.ndarray:
    """(B, width) int64 array of the rows, right-padded with `fill`."""
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for out_row, row in zip(out, rows, strict=True):
        out_row[:len(row)] = row
    return out


# ----- the shared tokenizer

class Tokenizer:
    """A tokenizer of the BERT family; build one with `from_pretrained` or `train`.

    The scheme is a subclass (WordPiece, byte-level BPE, SentencePiece unigram), named by `kind`. Calling
    ``Tokenizer(tokens, ...)`` directly builds WordPiece, the scheme this class had before the family grew.
    """

    kind: ClassVar[str]
    files: ClassVar[tuple[str, ...]]  # what from_pretrained looks for in a folder
    description: ClassVar[str]
    default_vocab_size: ClassVar[int]
    pair_separators: ClassVar[int] = 1  # separator tokens between the two texts of a pair (RoBERTa: 2)
    second_type_id: ClassVar[int] = 1  # token type of the second text and its separator (RoBERTa: 0)
    truncation_rule: ClassVar[str] = "bert"  # how longest_first splits a pair's budget; see _truncated_lengths
    _schemes: ClassVar[dict[str, type[Tokenizer]]] = {}

    _tokens: list[str]
    _ids: dict[str, int]
    _continuation: np.ndarray
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    special_ids: frozenset[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Tokenizer._schemes[cls.kind] = cls

    def __new__(cls, *args: Any, **kwargs: Any) -> Tokenizer:
        if cls is Tokenizer:
            cls = Tokenizer._schemes["wordpiece"]
        return super().__new__(cls)

    def _set_vocabulary(self, tokens: Sequence[str], specials: Sequence[str], source: str) -> None:
        """Tokens by id, and the ids of the five roles; `specials` names the pad, unk, cls, sep, mask tokens."""
        self._tokens = list(tokens)
        self._ids = {token: i for i, token in enumerate(self._tokens)}
        missing = [t for t in specials if t not in self._ids]
        if missing:
            raise ValueError(f"{source}: missing special tokens {', '.join(missing)}")
        if len(self._ids) != len(self._tokens):
            raise ValueError(f"{source}: repeated tokens")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self._ids[t] for t in specials)
        self.special_ids = frozenset((self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id))

    def _set_continuation(self, flags: Iterable[bool]) -> None:
        self._continuation = np.fromiter(flags, dtype=bool, count=len(self._tokens))
        self._continuation.flags.writeable = False

    # ----- loading, saving, training ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a folder (or a vocabulary file): vocab.txt is WordPiece, vocab.json + merges.txt byte-level BPE,
        spiece.model SentencePiece unigram. Called on a scheme's class, it loads that scheme."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer at {path}")
        scheme = cls if cls is not Tokenizer else _scheme_of(path)
        return scheme._load(path)

    @classmethod
    def _load(cls, path: Path) -> Tokenizer:
        raise NotImplementedError

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the scheme's files in the standard layout plus tokenizer_config.json (atomically, file by file)."""
        raise NotImplementedError

    @classmethod
    def train(cls, files: Iterable[str | os.PathLike], *, vocab_size: int | None = None, kind: Kind | None = None,
              min_frequency: int = 2, lowercase: bool | None = None,
              strip_accents: bool | None = None) -> Tokenizer:
        """Learn a vocabulary of at most `vocab_size` entries from UTF-8 text files.

        Args:
            kind: "wordpiece" (BERT, the default), "bpe" (RoBERTa's byte-level BPE) or "unigram" (ALBERT's
                SentencePiece); on a scheme's class, that scheme.
            vocab_size: default 30522 (wordpiece), 50265 (bpe), 30000 (unigram), the published sizes.
            min_frequency: least count of a merge (wordpiece, bpe); the unigram trainer prunes by likelihood.
            lowercase, strip_accents: normalisation (None = the scheme's default: lower-cased without accents
                for wordpiece and unigram; byte-level BPE keeps text as it is and accepts no normalisation).

        A file that is not UTF-8 is an error naming the file and line rather than a silent skip: a half-read corpus
        would go unnoticed.
        """
        if kind is None:
            scheme = cls if cls is not Tokenizer else Tokenizer._schemes["wordpiece"]
        elif kind not in Tokenizer._schemes:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        else:
            scheme = Tokenizer._schemes[kind]
            if cls is not Tokenizer and scheme is not cls:
                raise ValueError(f"{cls.__name__}.train cannot train kind={kind!r}")
        paths = check_training_files(files)
        if not any(line.strip() for line in utf8_lines(paths)):  # stops at the first line of text
            shown = ", ".join(map(str, paths[:3])) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            raise ValueError(f"no text to train on in {shown}")
        size = scheme.default_vocab_size if vocab_size is None else vocab_size
        return scheme._train(paths, vocab_size=size, min_frequency=min_frequency, lowercase=lowercase,
                             strip_accents=strip_accents)

    @classmethod
    def _train(cls, paths: list[Path], *, vocab_size: int, min_frequency: int, lowercase: bool | None,
               strip_accents: bool | None) -> Tokenizer:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 over everything that decides the ids: equal fingerprints give equal ids for any text."""
        raise NotImplementedError

    # ----- vocabulary -------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def vocab(self) -> dict[str, int]:
        return dict(self._ids)

    @property
    def continuation_mask(self) -> np.ndarray:
        """(vocab_size,) bool, True for pieces that continue a word (whole-word masking needs it)."""
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

    # ----- encoding -----------------------------------------------------------------------------------------

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens or truncation (the pretraining data path)."""
        raise NotImplementedError

    def _pieces(self, texts: Sequence[str]) -> list[_Pieces]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        raise NotImplementedError

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """Special tokens around one text (2) or a pair (3, RoBERTa 4)."""
        return 2 + self.pair_separators if pair else 2

    def build_inputs(self, first: Sequence[int], second: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
        """(input ids, token type ids) of ids without special tokens, in the architecture's layout."""
        ids = self._frame(list(first), None if second is None else list(second), self.cls_id, self.sep_id, True)
        return ids, self._type_ids(len(ids), None if second is None else len(second), True)

    def _frame(self, first: list, second: list | None, cls: Any, sep: Any, add_special: bool) -> list:
        """cls first sep (sep ... second sep): [CLS] a [SEP] b [SEP] for BERT, <s> a </s></s> b </s> for RoBERTa."""
        if not add_special:
            return first + (second or [])
        if second is None:
            return [cls, *first, sep]
        return [cls, *first, *[sep] * self.pair_separators, *second, sep]

    def _type_ids(self, total: int, lb: int | None, add_special: bool) -> list[int]:
        """The second sequence and its closing separator have type `second_type_id`; the rest type 0."""
        n_second = 0 if lb is None or not self.second_type_id else lb + add_special
        return [0] * (total - n_second) + [self.second_type_id] * n_second

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
        """Encode a text, or a text pair in the architecture's layout."""
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
        n_special = self.num_special_tokens_to_add(lb is not None) if add_special else 0
        total = la + (lb or 0) + n_special
        if max_length is None or total <= max_length:
            return la, lb
        if max_length < n_special:
            raise ValueError(f"max_length={max_length} is shorter than the {n_special} special tokens")
        if strategy is None:
            raise ValueError(f"text {index} encodes to {total} tokens, more than max_length={max_length}; "
                             "pass truncation=True to cut it")
        return _truncated_lengths(la, lb, max_length - n_special, strategy, self.truncation_rule)

    def _assemble(self, index: int, a: _Pieces, b: _Pieces | None, max_length: int | None, strategy: str | None,
                  add_special: bool) -> Encoding:
        """Truncate, then lay out the special tokens with type ids, offsets and word ids."""
        la, lb = self._lengths(index, len(a.ids), None if b is None else len(b.ids), max_length, strategy,
                               add_special)

        def cut(field: str, cls: Any, sep: Any) -> list:
            second = None if b is None else getattr(b, field)[:lb]
            return self._frame(getattr(a, field)[:la], second, cls, sep, add_special)

        sequence_ids = self._frame([0] * la, None if b is None else [1] * lb, None, None, add_special)
        return Encoding(ids=cut("ids", self.cls_id, self.sep_id),
                        type_ids=self._type_ids(len(sequence_ids), lb, add_special),
                        attention_mask=[1] * len(sequence_ids), offsets=cut("offsets", (0, 0), (0, 0)),
                        word_ids=cut("word_ids", None, None), sequence_ids=sequence_ids,
                        tokens=cut("tokens", self._tokens[self.cls_id], self._tokens[self.sep_id]))

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
            rows.append(self._frame(a[:la], None if b is None else b[:lb], self.cls_id, self.sep_id, True))
            types.append(self._type_ids(len(rows[-1]), lb, True))
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


class PipelineTokenizer(Tokenizer):
    """A scheme whose whole pipeline, normalisation to offsets, runs in one `tokenizers` object (`_rust`)."""

    _rust: RustTokenizer
    truncation_rule = "tokenizers"

    def _rust_encode(self, texts: Sequence[str]) -> list[Any]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is a {type(text).__name__}, expected str")
            bad = _SURROGATE.search(text)
            if bad:
                raise ValueError(f"text {i} holds a lone surrogate (U+{ord(bad.group()):04X}) at character "
                                 f"{bad.start()}: not valid Unicode text")
        return self._rust.encode_batch(list(texts), add_special_tokens=False)

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [enc.ids for enc in self._rust_encode(texts)]

    def _pieces(self, texts: Sequence[str]) -> list[_Pieces]:
        # tokens by id, not the matched text: a special token that absorbed a space reads " <mask>" in Rust
        return [_Pieces(enc.ids, [self._tokens[i] for i in enc.ids], enc.offsets, enc.word_ids)
                for enc in self._rust_encode(texts)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text from ids, as the reference decodes them (no clean-up of spaces around punctuation)."""
        return self._rust.decode([self._checked_id(i) for i in ids], skip_special_tokens=skip_special_tokens)


# ----- which scheme a folder holds

def _scheme_of(path: Path) -> type[Tokenizer]:
    """The scheme of a vocabulary file (by its suffix) or of a folder (by the files it holds)."""
    schemes = {kind: Tokenizer._schemes[kind] for kind in KINDS}
    if path.is_file():
        return schemes["unigram" if path.suffix == ".model" else "bpe" if path.suffix == ".json" else "wordpiece"]
    found = [s for s in schemes.values() if any((path / name).is_file() for name in s.files)]
    if len(found) == 1:
        return found[0]
    if not found:
        looked = ", ".join(f"{' + '.join(s.files)} ({s.description})" for s in schemes.values())
        raise FileNotFoundError(f"{path}: no tokenizer files; looked for {looked}")
    named = _declared_kind(path)
    if named is None or schemes[named] not in found:
        names = ", ".join(name for s in found for name in s.files if (path / name).is_file())
        raise ValueError(f"{path} holds the files of several tokenizers ({names}) and neither {CONFIG_FILE} "
                         "nor config.json says which one it uses")
    return schemes[named]


def _declared_kind(path: Path) -> str | None:
    """The scheme named by tokenizer_config.json's tokenizer_class, else by config.json's model_type."""
    for name, key in ((CONFIG_FILE, "tokenizer_class"), ("config.json", "model_type")):
        if not (path / name).is_file():
            continue
        value = read_json(path / name)
        value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str):
            continue
        if key == "model_type" and value in VARIANTS:
            return VARIANTS[value].tokenizer_kind
        found = class_variant(value)
        if found is not None:
            return found[0].tokenizer_kind
        for prefix, kind in _OTHER_CLASSES.items():
            if value.startswith(prefix):
                return kind
    return None
