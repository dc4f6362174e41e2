"""SentencePiece unigram tokenisation for ALBERT: load spiece.model, train, save; encoding runs in `tokenizers`.

The pipeline is ALBERT's (transformers' AlbertTokenizer, do_lower_case=True, keep_accents=False): `` and '' become
", NFKD with the accents dropped, lower case, the model's own normalisation table (nmt_nfkc), split at whitespace
(which also removes extra spaces), "▁" before each word, then the unigram model's most likely segmentation.
Special-token strings in the text ("[MASK]") become their ids.

Loading reads spiece.model itself (`spiece_proto`), so it needs no extra package. Training uses the sentencepiece
library, measured against the `tokenizers` unigram trainer on the fixture corpus: it writes a genuine spiece.model,
normalisation table included, as ALBERT's was made; it gives the same file on every run for a fixed thread count
(the `tokenizers` trainer's scores changed in their last digits from run to run, and with them the fingerprint);
it trained about twice as fast; and the pieces compressed held-out text as well.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as RustTokenizer

from bertkit.files import write_bytes, write_text
from bertkit.tokenizer.base import (
    CONFIG_FILE,
    PipelineTokenizer,
    added_tokens_config,
    read_config,
    utf8_lines,
)
from bertkit.tokenizer.spiece_proto import CONTROL, UNKNOWN, UNUSED, USER_DEFINED, read_model

SPECIAL_TOKENS = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")  # the pad, unk, cls, sep and mask roles; ids 0-4
CONTROL_SYMBOLS = ("[CLS]", "[SEP]", "[MASK]")
MODEL_FILE = "spiece.model"
WORD_START = "▁"
_TRAIN_THREADS = 4  # the trained model depends on the thread count, so it is fixed
_MAX_LINE_BYTES = 1 << 16  # longer lines are left out of training (sentencepiece's default is 4192)


def _albert_normalizers(lowercase: bool, keep_accents: bool) -> list[normalizers.Normalizer]:
    """ALBERT's own normalisation, applied before the model's table."""
    steps = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not keep_accents:
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return steps


class _TrainingLines:
    """Normalised non-empty lines for the sentencepiece trainer, which turns an exception raised while reading
    into a bare RuntimeError: the first one is kept here to be raised as it was."""

    def __init__(self, lines: Iterator[str], normalizer: normalizers.Normalizer) -> None:
        self._lines, self._normalizer = lines, normalizer
        self.count, self.error = 0, None

    def __iter__(self) -> _TrainingLines:
        return self

    def __next__(self) -> str:
        try:
            while True:
                line = next(self._lines).strip()
                if line:
                    self.count += 1
                    return self._normalizer.normalize_str(line)
        except StopIteration:
            raise
        except Exception as err:
            self.error = err
            raise


class SentencePieceTokenizer(PipelineTokenizer):
    """ALBERT's tokenizer: ``[CLS] a [SEP] b [SEP]`` with token types 0/1, pieces from a unigram model."""

    kind = "unigram"
    files = (MODEL_FILE,)
    description = "SentencePiece unigram"
    default_vocab_size = 30000

    def __init__(self, model: bytes, *, lowercase: bool = True, keep_accents: bool = False,
                 source: str = MODEL_FILE) -> None:
        """`model` is the content of a spiece.model file."""
        self._model_file = bytes(model)
        spm = read_model(self._model_file, source)
        if spm.model_type != "unigram":
            raise ValueError(f"{source}: a SentencePiece {spm.model_type} model; only unigram models (as ALBERT's) "
                             "are supported")
        self._set_vocabulary(spm.pieces, SPECIAL_TOKENS, source)
        self._spm, self.lowercase, self.keep_accents = spm, lowercase, keep_accents
        try:
            rust = RustTokenizer(models.Unigram(list(zip(spm.pieces, spm.scores, strict=True)), unk_id=spm.unk_id,
                                                byte_fallback=False))
            table = [normalizers.Precompiled(spm.precompiled_charsmap)] if spm.precompiled_charsmap else []
        except Exception as err:  # the tokenizers library refuses what the file holds (e.g. a damaged table)
            raise ValueError(f"{source}: not a SentencePiece model file ({err})") from None
        rust.normalizer = normalizers.Sequence(_albert_normalizers(lowercase, keep_accents) + table)
        word_start = {"replacement": WORD_START, "prepend_scheme": "always"}
        rust.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                      pre_tokenizers.Metaspace(**word_start)])
        rust.decoder = decoders.Metaspace(**word_start)
        # control pieces and the five roles are special (skipped when decoding); user-defined pieces are text
        special = {p for p, t in zip(spm.pieces, spm.types, strict=True) if t == CONTROL} | set(SPECIAL_TOKENS)
        user = [p for p, t in zip(spm.pieces, spm.types, strict=True) if t == USER_DEFINED and p not in special]
        rust.add_special_tokens([AddedToken(p, normalized=False, special=True)
                                 for p in sorted(special, key=self._ids.__getitem__)])
        rust.add_tokens([AddedToken(p, normalized=False, special=False) for p in user])
        self._rust = rust
        never = (UNKNOWN, CONTROL, UNUSED)
        self._set_continuation(not t.startswith(WORD_START) and kind not in never and i not in self.special_ids
                               for i, (t, kind) in enumerate(zip(spm.pieces, spm.types, strict=True)))

    # ----- loading, saving, training ----------------------------------------------------------------------------

    @classmethod
    def _load(cls, path: Path) -> SentencePieceTokenizer:
        """A folder with spiece.model (tokenizer_config.json optional), or the model file's path."""
        model_path = path / MODEL_FILE if path.is_dir() else path
        if not model_path.is_file():
            raise FileNotFoundError(f"no SentencePiece model at {model_path}")
        settings = read_config(model_path.parent / CONFIG_FILE, ("do_lower_case", "keep_accents"))
        return cls(model_path.read_bytes(), lowercase=settings.get("do_lower_case", True),
                   keep_accents=settings.get("keep_accents", False), source=str(model_path))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """spiece.model (the bytes it was loaded from) and a tokenizer_config.json for AlbertTokenizer."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"tokenizer_class": "AlbertTokenizer", "do_lower_case": self.lowercase,
                  "keep_accents": self.keep_accents, "remove_space": True, "bos_token": "[CLS]", "eos_token": "[SEP]",
                  "cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "<unk>", "pad_token": "<pad>",
                  "mask_token": "[MASK]", "added_tokens_decoder": added_tokens_config(SPECIAL_TOKENS, self._ids)}
        write_bytes(directory / MODEL_FILE, self._model_file)
        write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")

    @classmethod
    def _train(cls, paths: list[Path], *, vocab_size: int, min_frequency: int, lowercase: bool | None,
               strip_accents: bool | None) -> SentencePieceTokenizer:
        """<pad> <unk> [CLS] [SEP] [MASK] take ids 0-4 as in ALBERT; the corpus is normalised as encoding will be."""
        import sentencepiece

        lowercase = True if lowercase is None else lowercase
        keep_accents = not (lowercase if strip_accents is None else strip_accents)
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size={vocab_size} leaves no room beside the {len(SPECIAL_TOKENS)} special tokens")
        lines = _TrainingLines(utf8_lines(paths), normalizers.Sequence(_albert_normalizers(lowercase, keep_accents)))
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=lines, model_writer=model, model_type="unigram", vocab_size=vocab_size,
                pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece="<pad>", unk_piece="<unk>",
                control_symbols=list(CONTROL_SYMBOLS), normalization_rule_name="nmt_nfkc", hard_vocab_limit=False,
                max_sentence_length=_MAX_LINE_BYTES, num_threads=_TRAIN_THREADS, minloglevel=2)
        except RuntimeError as err:
            if lines.error is not None:
                raise lines.error from None
            if lines.count == 0:
                raise ValueError(f"no text to train on in {', '.join(map(str, paths))}") from None
            reason = str(err).rsplit("] ", 1)[-1].strip()  # drop the C++ source location and check
            raise ValueError(f"unigram training failed: {reason}") from None
        return cls(model.getvalue(), lowercase=lowercase, keep_accents=keep_accents)

    def fingerprint(self) -> str:
        """sha256 over the scheme, pieces, scores, normalisation table and settings: equal fingerprints give equal
        ids for any text."""
        spm = self._spm
        state = {"format": 1, "kind": self.kind, "pieces": spm.pieces, "scores": spm.scores, "types": spm.types,
                 "unk_id": spm.unk_id, "table": hashlib.sha256(spm.precompiled_charsmap).hexdigest(),
                 "lowercase": self.lowercase, "keep_accents": self.keep_accents}
        return hashlib.sha256(json.dumps(state, ensure_ascii=False).encode("utf-8")).hexdigest()
