"""Byte-level BPE for RoBERTa (GPT-2's scheme): load vocab.json + merges.txt, train, save; encoding in `tokenizers`.

Text is taken as UTF-8 bytes, each byte shown as a printable character ("Ġ" is the space byte), so every string
encodes without unknown tokens and decodes back exactly. Words carry the space before them ("Ġworld"). As in
RoBERTa no space is added before the first word, and "<mask>" absorbs the spaces before it, so "the <mask>" gives
the ids the model was pretrained on. Offsets leave those spaces out, as RobertaTokenizerFast (trim_offsets).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as RustTokenizer

from bertkit.files import write_text
from bertkit.tokenizer.base import (
    CONFIG_FILE,
    PipelineTokenizer,
    added_tokens_config,
    read_config,
    read_json,
    utf8_lines,
)

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")  # the pad, unk, cls, sep and mask roles
TRAINED_ORDER = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0-4 of a new vocabulary: RoBERTa's pad id is 1
MASK = "<mask>"
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
MERGES_HEADER = "#version: 0.2"
ALPHABET = pre_tokenizers.ByteLevel.alphabet()  # the 256 byte symbols


def _read_vocab(path: Path) -> list[str]:
    """Tokens by id from vocab.json ({"token": id}); the ids must be 0..N-1, each once."""
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a JSON object mapping tokens to ids")
    tokens: list[str | None] = [None] * len(data)
    for token, i in data.items():
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(data):
            raise ValueError(f"{path}: token {token!r} has id {i!r}; ids must be 0 to {len(data) - 1}")
        if tokens[i] is not None:
            raise ValueError(f"{path}: tokens {tokens[i]!r} and {token!r} share id {i}")
        tokens[i] = token
    return tokens  # type: ignore[return-value]  # N distinct ids in 0..N-1 fill every slot


def _read_merges(path: Path, vocab: set[str]) -> list[tuple[str, str]]:
    """Merge rules, one "left right" per line in priority order; both sides and their join must be tokens."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not valid UTF-8") from None
    merges = []
    for number, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path}:{number}: expected two tokens separated by one space, got {line!r}")
        missing = [t for t in (*parts, parts[0] + parts[1]) if t not in vocab]
        if missing:
            raise ValueError(f"{path}:{number}: {', '.join(map(repr, missing))} not in {VOCAB_FILE}")
        merges.append((parts[0], parts[1]))
    return merges


class ByteLevelBPETokenizer(PipelineTokenizer):
    """RoBERTa's tokenizer: ``<s> a </s>`` and ``<s> a </s></s> b </s>``, token types all 0."""

    kind = "bpe"
    files = (VOCAB_FILE, MERGES_FILE)
    description = "byte-level BPE"
    default_vocab_size = 50265
    pair_separators = 2
    second_type_id = 0

    def __init__(self, tokens: Sequence[str], merges: Sequence[tuple[str, str]], *, add_prefix_space: bool = False,
                 trim_offsets: bool = True, source: str = "vocabulary") -> None:
        """`tokens` by id; `merges` in priority order. add_prefix_space puts a space before the first word."""
        self._set_vocabulary(tokens, SPECIAL_TOKENS, source)
        self.merges = [tuple(m) for m in merges]
        self.add_prefix_space, self.trim_offsets = add_prefix_space, trim_offsets
        try:
            model = models.BPE(vocab=self._ids, merges=self.merges, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False)
        except Exception as err:  # the Rust side names the offending merge
            raise ValueError(f"{source}: {err}") from None
        rust = RustTokenizer(model)
        rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
        rust.decoder = decoders.ByteLevel()
        # Outside special tokens, the processor only trims the spaces out of the offsets (when trim_offsets).
        rust.post_processor = processors.RobertaProcessing(("</s>", self.sep_id), ("<s>", self.cls_id),
                                                           trim_offsets=trim_offsets, add_prefix_space=add_prefix_space)
        rust.add_special_tokens([AddedToken(t, lstrip=t == MASK, normalized=False, special=True)
                                 for t in SPECIAL_TOKENS])
        self._rust = rust
        self._set_continuation(not t.startswith("Ġ") and i not in self.special_ids
                               for i, t in enumerate(self._tokens))

    # ----- loading, saving, training ----------------------------------------------------------------------------

    @classmethod
    def _load(cls, path: Path) -> ByteLevelBPETokenizer:
        """A folder with vocab.json + merges.txt (tokenizer_config.json optional), or the vocab.json path."""
        folder = path if path.is_dir() else path.parent
        vocab_path = path if path.is_file() else folder / VOCAB_FILE
        for required in (vocab_path, folder / MERGES_FILE):
            if not required.is_file():
                raise FileNotFoundError(f"{folder}: byte-level BPE needs {VOCAB_FILE} and {MERGES_FILE}; "
                                        f"{required.name} is missing")
        tokens = _read_vocab(vocab_path)
        merges = _read_merges(folder / MERGES_FILE, set(tokens))
        settings = read_config(folder / CONFIG_FILE, ("add_prefix_space", "trim_offsets"))
        return cls(tokens, merges, source=str(vocab_path), **settings)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """vocab.json, merges.txt and a tokenizer_config.json that transformers' RobertaTokenizer reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        mask = {"__type": "AddedToken", "content": MASK, "lstrip": True, "normalized": False, "rstrip": False,
                "single_word": False, "special": True}
        config = {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": self.add_prefix_space,
                  "trim_offsets": self.trim_offsets, "errors": "replace", "bos_token": "<s>", "eos_token": "</s>",
                  "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
                  "mask_token": mask, "added_tokens_decoder": added_tokens_config(SPECIAL_TOKENS, self._ids, [MASK])}
        vocab = {t: i for i, t in enumerate(self._tokens)}
        write_text(directory / VOCAB_FILE, json.dumps(vocab, ensure_ascii=False) + "\n")
        write_text(directory / MERGES_FILE, MERGES_HEADER + "\n" + "".join(f"{a} {b}\n" for a, b in self.merges))
        write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")

    @classmethod
    def _train(cls, paths: list[Path], *, vocab_size: int, min_frequency: int, lowercase: bool | None,
               strip_accents: bool | None) -> ByteLevelBPETokenizer:
        """<s> <pad> </s> <unk> <mask> take ids 0-4, the 256 byte symbols follow, then one token per merge.

        The trainer breaks ties between equally frequent pairs in a fixed order, so a corpus gives the same files
        on every run. Lines keep their newline: raw text has them, and RoBERTa's vocabulary holds "Ċ" too.
        """
        if lowercase or strip_accents:
            raise ValueError("byte-level BPE keeps text as it is (RoBERTa is cased): lowercase and strip_accents "
                             "are not supported")
        if vocab_size < len(SPECIAL_TOKENS) + len(ALPHABET):
            raise ValueError(f"vocab_size={vocab_size} is below the {len(ALPHABET)} byte symbols and "
                             f"{len(SPECIAL_TOKENS)} special tokens a byte-level vocabulary starts with")
        shell = RustTokenizer(models.BPE())
        shell.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(TRAINED_ORDER), initial_alphabet=ALPHABET,
                                      show_progress=False)
        shell.train_from_iterator(utf8_lines(paths), trainer=trainer)
        model = json.loads(shell.to_str())["model"]
        tokens = sorted(model["vocab"], key=model["vocab"].__getitem__)
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return cls(tokens, merges)

    def fingerprint(self) -> str:
        """sha256 over the scheme, vocabulary, merges and prefix space: equal fingerprints give equal ids."""
        state = {"format": 1, "kind": self.kind, "vocab": self._tokens, "merges": self.merges,
                 "add_prefix_space": self.add_prefix_space, "lstrip": [MASK]}
        return hashlib.sha256(json.dumps(state, ensure_ascii=False).encode("utf-8")).hexdigest()
