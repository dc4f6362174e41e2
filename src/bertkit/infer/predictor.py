"""Predictor: one object per model directory that answers whatever the model was trained to answer.

A fine-tuned directory (its task family in config.json, see :mod:`bertkit.recipes.finetune`) answers its task:
``classify`` (classify / pair / regress), ``tag`` or ``answer`` (qa). Every model gives ``embed``; a
checkpoint with a masked-LM head also gives ``fill_mask``. ``capabilities`` lists what a directory supports.

Texts are tokenized once, sorted by length and batched so each batch pads only to its own longest text;
results come back in input order, each flagged ``truncated`` when its text was cut to ``max_length`` tokens.
The model runs on one of two backends behind the same calls: eager PyTorch (on the CPU or a GPU, in fp32 or
bf16, or on the CPU with dynamic int8 linears, :mod:`bertkit.infer.quantize`) or onnxruntime on the exported
graph (:mod:`bertkit.infer.onnx_export`).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit.checkpoint import names
from bertkit.checkpoint.io import find_weights, load_weights, read_state_dict
from bertkit.config import BertConfig
from bertkit.data.batching import length_sorted_batches
from bertkit.infer.batching import Row, run_padded
from bertkit.infer.embed import POOLINGS, pool
from bertkit.infer.fill_mask import MaskPrediction
from bertkit.infer.parallel_batches import check_streams, streams_for
from bertkit.infer.quantize import DEFAULT_RECIPE, Int8Recipe, calibration_batch, quantize_int8
from bertkit.infer.torch_backend import TorchBackend
from bertkit.model import BertForPreTraining, BertModel
from bertkit.tasks.classification import Classification, classify_logits
from bertkit.tasks.families import TaskSpec, head_class
from bertkit.tasks.models import load_task_model
from bertkit.tasks.qa import decode_qa, encode_qa
from bertkit.tasks.readers import QAExample
from bertkit.tasks.tagging import EntitySpan, entity_spans
from bertkit.tokenizer import Encoding, Tokenizer

log = logging.getLogger("bertkit")

BACKENDS = ("torch", "onnx")


@dataclass
class Tagging:
    entities: list[EntitySpan]  # each with its mean tag probability as score
    truncated: bool = False


@dataclass
class AnswerSpan:
    """The answer cut from the context: text ("" = no answer), character span (-1 when none), span score."""

    text: str
    start: int
    end: int
    score: float | None  # start + end logit; None when the context has no answerable span
    truncated: bool = False  # the question was cut to the model's max_query_len tokens


@dataclass
class FillMask:
    masks: list[list[MaskPrediction]]  # per [MASK] in the text, top-k candidates, most probable first
    truncated: bool = False


@dataclass
class Embeddings:
    vectors: np.ndarray  # (N, H) float32, in input order
    truncated: list[bool]


def _check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{what} must be a list of strings")
    return list(texts)


def load_model(directory: Path) -> tuple[nn.Module, TaskSpec | None]:
    """A fine-tuned head with its task spec, or a plain encoder (with its MLM head when the file has one)."""
    config = BertConfig.from_json_file(directory / "config.json")
    architecture = (config.extra.get("architectures") or [""])[0]
    if "bertkit" in config.extra or head_class(architecture) is not None:
        loaded = load_task_model(directory)
        return loaded.model, loaded.spec
    state = read_state_dict(find_weights(directory))
    mlm_root = names.layout(config).heads["mlm.dense"].rsplit(".", 1)[0] + "."  # "cls.predictions.transform." …
    has_mlm = any(names.normalise_standard(k).startswith(mlm_root) for k in state)
    model = BertForPreTraining(config) if has_mlm else BertModel(config)
    return load_weights(model, directory, state=state).eval(), None


class Predictor:
    """Inference on one model directory (config.json, weights, and the tokenizer's files) of any family member.

    Args:
        backend: "torch" (eager) or "onnx" (onnxruntime on ``onnx_path``, default DIR/model.onnx; exported to
            a temporary file when absent).
        quantize: None or "int8": dynamic int8 on the encoder linears chosen by ``recipe``.
        threads: intra-op threads (torch's setting is process-wide; onnxruntime's per session).
        streams: how many batches the torch backend runs at once on the CPU, each on ``threads / streams``
            threads (:mod:`bertkit.infer.parallel_batches`); default 2 where there are 2 or more threads, else 1.
            A call that makes fewer than two batches per stream runs them one by one on all threads. GPU and
            onnxruntime run one batch at a time.
        batch_size, max_tokens: at most this many texts, and padded tokens, per forward.
        max_length: tokens per text before truncation; default the fine-tuning length (task models) or the
            model's position limit.
        device, dtype: where and in what precision the torch backend runs ("cpu" / "cuda" / "cuda:1";
            "fp32" / "bf16" / "fp16"). bf16 is the GPU path: CPUs without bf16 matmul units run it slower.
    """

    def __init__(self, path: str | os.PathLike, *, backend: str = "torch", quantize: str | None = None,
                 threads: int | None = None, streams: int | None = None, batch_size: int = 32,
                 max_tokens: int | None = 16384,
                 max_length: int | None = None, onnx_path: str | os.PathLike | None = None,
                 recipe: Int8Recipe = DEFAULT_RECIPE, device: str = "cpu", dtype: str = "fp32") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        if (backend == "onnx" or quantize) and (torch.device(device).type != "cpu" or dtype != "fp32"):
            what = "backend='onnx'" if backend == "onnx" else "quantize='int8'"
            raise ValueError(f"{what} runs on the CPU in fp32; device={device!r} and dtype={dtype!r} apply to "
                             "the torch backend without quantisation")
        check_streams(streams)
        on_cpu_torch = backend == "torch" and torch.device(device).type == "cpu"
        if streams is not None and streams > 1 and not on_cpu_torch:
            raise ValueError(f"streams above 1 apply to the torch backend on the CPU only; got streams={streams} "
                             f"with backend={backend!r}, device={device!r}")
        self.directory = Path(path)
        self.model, self.spec = load_model(self.directory)
        self.tokenizer = Tokenizer.from_pretrained(self.directory)
        self.config: BertConfig = self.model.config
        limit = self.config.max_sequence_length
        self.max_length = min(max_length or (self.spec.max_seq_len if self.spec else limit), limit)
        self.batch_size, self.max_tokens, self.quantize = batch_size, max_tokens, quantize
        self._tmp: tempfile.TemporaryDirectory | None = None
        if threads is not None and backend == "torch":
            torch.set_num_threads(threads)
        if backend == "onnx":
            self.backend = self._onnx_backend(onnx_path, threads, recipe)
        else:
            if quantize == "int8":
                quantize_int8(self.model, recipe, [calibration_batch(self.tokenizer)])
            self.backend = TorchBackend(self.model, device, dtype)
        self.streams = streams_for(streams, threads) if on_cpu_torch else None

    def _onnx_backend(self, onnx_path: str | os.PathLike | None, threads: int | None, recipe: Int8Recipe):
        from bertkit.infer.onnx_backend import OnnxBackend
        from bertkit.infer.onnx_export import ONNX_FILE, export_onnx, quantize_onnx

        path = Path(onnx_path) if onnx_path is not None else self.directory / ONNX_FILE
        if not path.is_file() or self.quantize == "int8":
            self._tmp = tempfile.TemporaryDirectory(prefix="bertkit-onnx-")
        if not path.is_file():
            if onnx_path is not None:
                raise FileNotFoundError(f"{path}: no such ONNX file; write it with `bertkit export onnx`")
            path = export_onnx(self.model, Path(self._tmp.name) / ONNX_FILE)
        if self.quantize == "int8":
            path = quantize_onnx(path, Path(self._tmp.name) / "model.int8.onnx", recipe)
        return OnnxBackend(path, threads)

    @property
    def task(self) -> str | None:
        """The fine-tuned task family (classify, pair, regress, tag, qa), or None for a plain encoder."""
        return self.spec.task if self.spec else None

    @property
    def mask_token(self) -> str:
        """The token fill-mask predicts: "[MASK]" for BERT's vocabularies, "<mask>" for RoBERTa's."""
        return self.tokenizer.convert_ids_to_tokens([self.tokenizer.mask_id])[0]

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Methods this model supports, among classify, tag, answer, fill_mask, embed."""
        found = [self.spec.family.answers] if self.spec else []
        if isinstance(self.model, BertForPreTraining):
            found.append("fill_mask")
        return (*found, "embed")

    def _require(self, capability: str) -> None:
        if capability not in self.capabilities:
            trained = f"fine-tuned for task {self.task!r}" if self.task else "a plain encoder (no task head)"
            raise ValueError(f"{self.directory} is {trained}; it supports {', '.join(self.capabilities)}, "
                             f"not {capability}")

    # --- shared machinery ------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> tuple[list[Encoding], list[bool]]:
        """Encodings cut to ``max_length`` (pairs longest-first), and whether each was cut."""
        return self._cut_to_length(self.tokenizer.encode_batch, texts, pairs, lambda e: len(e.ids))

    def encode_ids(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> tuple[list[Row], list[bool]]:
        """(ids, type ids) rows cut like :meth:`encode`, for tasks that need no offsets: building no offsets,
        tokens or word ids makes tokenizing about twice as fast, and on a GPU tokenizing is most of the time."""

        def rows(texts: Sequence[str], pairs: Sequence[str] | None, **cut) -> list[Row]:
            out = self.tokenizer.batch_encode(texts, pairs, padding=False, return_tensors=None, **cut)
            return list(zip(out["input_ids"], out["token_type_ids"], strict=True))

        return self._cut_to_length(rows, texts, pairs, lambda r: len(r[0]))

    def _cut_to_length(self, encode: Callable[..., list], texts: Sequence[str], pairs: Sequence[str] | None,
                       length: Callable[[Any], int]) -> tuple[list, list[bool]]:
        """Encode everything whole, then re-encode only the texts over ``max_length`` with truncation."""
        items = encode(texts, pairs, max_length=None, truncation=False)
        truncated = [length(item) > self.max_length for item in items]
        long = [i for i, cut in enumerate(truncated) if cut]
        if long:
            again = encode([texts[i] for i in long], None if pairs is None else [pairs[i] for i in long],
                           max_length=self.max_length, truncation="longest_first")
            for i, item in zip(long, again, strict=True):
                items[i] = item
        return items, truncated

    def _batches(self, rows: Sequence[Row]) -> Iterator[tuple[list[int], dict, dict[str, torch.Tensor]]]:
        """(indices into rows, the padded batch, the backend's outputs), longest rows first."""
        groups = list(length_sorted_batches([len(r[0]) for r in rows], self.batch_size, self.max_tokens))
        return run_padded(rows, groups, self.tokenizer.pad_id, self.backend.run, self.streams)

    # --- tasks -----------------------------------------------------------------------------------------

    def classify(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[Classification]:
        """A label and class probabilities per text (or text pair); the value for regression models."""
        self._require("classify")
        texts = _check_texts(texts)
        if (pairs is not None) != self.spec.family.needs_pairs:
            need = "needs" if self.spec.family.needs_pairs else "takes no"
            raise ValueError(f"{self.directory} was fine-tuned for task {self.task!r}: it {need} pairs")
        if pairs is not None:
            pairs = _check_texts(pairs, "pairs")
            if len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        rows, truncated = self.encode_ids(texts, pairs)
        results: list[Classification] = [None] * len(texts)  # type: ignore[list-item]
        for indices, _, out in self._batches(rows):
            for i, row in zip(indices, out["logits"].float().cpu().numpy(), strict=True):
                results[i] = dataclasses.replace(classify_logits(row, self.spec.labels), truncated=truncated[i])
        return results

    def tag(self, texts: Sequence[str]) -> list[Tagging]:
        """Entities with character spans into each text.

        As in training (:mod:`bertkit.tasks.tagging`), a word is a whitespace-separated run and takes the
        tag predicted at its first sub-token; words cut off by truncation are tagged O.
        """
        self._require("tag")
        texts = _check_texts(texts)
        encodings, truncated = self.encode(texts)
        results: list[Tagging] = [None] * len(texts)  # type: ignore[list-item]
        for indices, _, out in self._batches(_rows(encodings)):
            probs = out["logits"].float().softmax(-1).cpu()  # (B, T, C)
            for row, i in enumerate(indices):
                entities = _entities(texts[i], encodings[i], probs[row].numpy(), self.spec.labels)
                results[i] = Tagging(entities, truncated[i])
        return results

    def answer(self, questions: Sequence[str], contexts: Sequence[str]) -> list[AnswerSpan]:
        """The best answer span in each question's context (long contexts are read in overlapping windows)."""
        self._require("answer")
        questions, contexts = _check_texts(questions, "questions"), _check_texts(contexts, "contexts")
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
        spec = self.spec
        examples = [QAExample(str(i), q, c) for i, (q, c) in enumerate(zip(questions, contexts, strict=True))]
        features = encode_qa(examples, self.tokenizer, max_seq_len=self.max_length, doc_stride=spec.doc_stride,
                             max_query_len=min(spec.max_query_len, self.max_length - 4))
        starts: list[np.ndarray] = [np.empty(0)] * len(features)
        ends: list[np.ndarray] = [np.empty(0)] * len(features)
        for indices, _, out in self._batches([(f.input_ids, f.token_type_ids) for f in features]):
            start, end = out["start_logits"].cpu().numpy(), out["end_logits"].cpu().numpy()
            for row, i in enumerate(indices):
                starts[i], ends[i] = start[row], end[row]
        decoded = decode_qa(examples, features, starts, ends, allow_no_answer=spec.squad_v2,
                            null_score_diff_threshold=spec.null_threshold).details
        question_lengths = [len(e.ids) for e in self.tokenizer.encode_batch(questions, add_special_tokens=False)]
        results = []
        for i, length in enumerate(question_lengths):
            p = decoded[str(i)]
            score = p.score if math.isfinite(p.score) else None
            results.append(AnswerSpan(p.text, p.start_char, p.end_char, score, length > spec.max_query_len))
        return results

    def fill_mask(self, texts: Sequence[str], top_k: int = 5) -> list[FillMask]:
        """Top-k tokens for every [MASK] of every text; the masked-LM head runs only at the masked positions."""
        self._require("fill_mask")
        texts = _check_texts(texts)
        rows, truncated = self.encode_ids(texts)
        mask_id = self.tokenizer.mask_id
        mask = self.mask_token
        for i, text in enumerate(texts):
            if mask_id not in rows[i][0] and mask not in text:
                raise ValueError(f"text {i} has no {mask} token; write {mask} where a word should be predicted")
        top_k = max(1, min(top_k, self.config.vocab_size))
        results: list[FillMask] = [None] * len(texts)  # type: ignore[list-item]
        for indices, batch, out in self._batches(rows):
            selected = batch["input_ids"] == mask_id  # (B, T)
            with torch.inference_mode():
                hidden = out["last_hidden_state"][selected.to(out["last_hidden_state"].device)]  # (M, H)
                probs = self.model.lm_logits(hidden).float().softmax(-1)
                values, ids = (t.cpu() for t in probs.topk(top_k, dim=-1))
            counts = selected.sum(1).tolist()
            ids, values = ids.split(counts), values.split(counts)
            for row, i in enumerate(indices):
                masks = [[MaskPrediction(t, k, p) for t, k, p in
                          zip(self.tokenizer.convert_ids_to_tokens(r_ids), r_ids, r_p, strict=True)]
                         for r_ids, r_p in zip(ids[row].tolist(), values[row].tolist(), strict=True)]
                results[i] = FillMask(masks, truncated[i])
        return results

    def embed(self, texts: Sequence[str], pooling: str = "mean", normalize: bool = False) -> Embeddings:
        """One vector per text: the mean over its real tokens or the [CLS] vector; optionally L2-normalised."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        texts = _check_texts(texts)
        vectors = np.zeros((len(texts), self.config.hidden_size), dtype=np.float32)
        rows, truncated = self.encode_ids(texts)
        for indices, batch, out in self._batches(rows):
            hidden = out["last_hidden_state"]
            pooled = pool(hidden.float(), batch["attention_mask"].to(hidden.device), pooling)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            vectors[indices] = pooled.cpu().numpy()
        return Embeddings(vectors, truncated)


def _rows(encodings: Sequence[Encoding]) -> list[Row]:
    return [(e.ids, e.type_ids) for e in encodings]


def _entities(text: str, encoding: Encoding, probs: np.ndarray, labels: Sequence[str]) -> list[EntitySpan]:
    """probs: (T, C) tag probabilities of the encoding's tokens -> entities over whitespace words of ``text``."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    starts = [start for start, _ in words]
    tags, scores = ["O"] * len(words), [0.0] * len(words)
    tagged: set[int] = set()
    for position, sequence in enumerate(encoding.sequence_ids):
        if sequence is None:
            continue
        word = bisect.bisect_right(starts, encoding.offsets[position][0]) - 1
        if word < 0 or word in tagged:
            continue
        tagged.add(word)
        best = int(probs[position].argmax())
        tags[word], scores[word] = labels[best], float(probs[position, best])
    return entity_spans(text, words, tags, scores)
