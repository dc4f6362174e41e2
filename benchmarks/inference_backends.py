"""Inference backends in one run: bertkit fp32 / int8 (torch), onnxruntime fp32 / int8, and transformers.

All rows embed the same sentences (all-MiniLM-L6-v2). "sorted" rows run bertkit's own length-sorted batches
(the batches ``Predictor`` makes), in the same order; "in order" rows run the padded batches of 32 in input
order that ``benchmarks/inference.py`` feeds transformers. bertkit runs two batches at once, one thread each
(its default, :mod:`bertkit.infer.streams`); its "1 stream" rows run one batch at a time on both threads, as
the other backends do, and "onnxruntime fp32 in order, 2 streams" gives onnxruntime the same two-at-once
schedule (two runs in flight on a one-thread session). Median of interleaved runs; ratios are against
bertkit fp32 end to end (``embed_texts``: tokenize, sort, batch, forward, pool). Then single-request latency:
one 16-token text, end to end for bertkit and transformers (tokenize + forward), forward only for onnxruntime,
one backend at a time.

    python benchmarks/inference_backends.py [--threads 2] [--repeats 3] [--sentences 512] [--latency-calls 300]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import shutil
import tempfile
from pathlib import Path

import torch
import transformers

from bertkit import BertModel, Tokenizer
from bertkit.infer.batching import length_sorted_batches
from bertkit.infer.encode import embed_texts
from bertkit.infer.graph import TorchBackend
from bertkit.infer.onnx_backend import OnnxBackend
from bertkit.infer.onnx_export import export_onnx, quantize_onnx
from bertkit.infer.quantize import calibration_batch, quantize_int8
from bertkit.infer.streams import run_batches, streams_for
from common import interleaved_medians, machine, minilm_dir, mixed_sentences


def sorted_batches(tokenizer: Tokenizer, texts: list[str], batch_size: int) -> list[dict[str, torch.Tensor]]:
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts, max_length=512, truncation=True)]
    return [tokenizer.batch_encode([texts[i] for i in indices], max_length=512)
            for indices in length_sorted_batches(lengths, batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latency-calls", type=int, default=300, help="single requests timed per backend")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    path, bs = minilm_dir(), args.batch_size
    texts = mixed_sentences(args.sentences)
    tokenizer = Tokenizer.from_pretrained(path)
    fp32 = BertModel.from_pretrained(path).eval()
    int8 = copy.deepcopy(fp32)
    quantize_int8(int8, calibration=[calibration_batch(tokenizer)])
    ref = transformers.BertModel.from_pretrained(str(path), attn_implementation="sdpa").eval()
    ref_tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    in_order = [dict(ref_tokenizer(texts[i:i + bs], padding=True, truncation=True, return_tensors="pt"))
                for i in range(0, len(texts), bs)]
    by_length = sorted_batches(tokenizer, texts, bs)
    tmp = Path(tempfile.mkdtemp(prefix="bertkit-bench-"))
    onnx_fp32 = export_onnx(fp32, tmp / "model.onnx")
    onnx_int8 = quantize_onnx(onnx_fp32, tmp / "model.int8.onnx")
    backends = {"bertkit fp32": TorchBackend(fp32), "bertkit int8": TorchBackend(int8),
                "onnxruntime fp32": OnnxBackend(onnx_fp32, args.threads),
                "onnxruntime int8": OnnxBackend(onnx_int8, args.threads)}
    streams = streams_for(2, args.threads)  # the pool embed_texts and Predictor use
    onnx_one_thread = OnnxBackend(onnx_fp32, max(1, args.threads // 2))

    def run_all(backend, batches, side_by_side=False):
        for _ in run_batches(backend.run, batches, streams if side_by_side else None):
            pass

    def transformers_e2e():
        with torch.inference_mode():
            for i in range(0, len(texts), bs):
                ref(**ref_tokenizer(texts[i:i + bs], padding=True, truncation=True, return_tensors="pt"))

    def e2e(model, count=None):
        return lambda: embed_texts(model, tokenizer, texts, pooling="mean", batch_size=bs, streams=count)

    runs = {"bertkit fp32 e2e": e2e(fp32), "bertkit int8 e2e": e2e(int8),
            "bertkit fp32 e2e, 1 stream": e2e(fp32, 1), "bertkit int8 e2e, 1 stream": e2e(int8, 1),
            "transformers-sdpa e2e": transformers_e2e}
    for name, backend in backends.items():
        ours = name.startswith("bertkit")
        runs[f"{name} sorted"] = lambda b=backend, s=ours: run_all(b, by_length, side_by_side=s)
        if ours:
            runs[f"{name} sorted, 1 stream"] = lambda b=backend: run_all(b, by_length)
        runs[f"{name} in order"] = lambda b=backend, s=ours: run_all(b, in_order, side_by_side=s)
    runs["onnxruntime fp32 in order, 2 streams"] = lambda: run_all(onnx_one_thread, in_order, side_by_side=True)
    times = interleaved_medians(runs, repeats=args.repeats)

    one = tokenizer.decode(tokenizer.encode(texts[0], max_length=16, truncation=True).ids[1:-1])
    single = tokenizer.batch_encode([one], max_length=16)

    def transformers_one():
        with torch.inference_mode():
            ref(**ref_tokenizer([one], truncation=True, max_length=16, return_tensors="pt"))

    # One backend at a time, as a service runs: interleaving single calls would charge each call for the
    # previous backend's thread pool (onnxruntime's threads spin on after a run).
    singles = {"bertkit fp32 e2e": lambda: embed_texts(fp32, tokenizer, [one], max_length=16),
               "bertkit int8 e2e": lambda: embed_texts(int8, tokenizer, [one], max_length=16),
               "transformers-sdpa e2e": transformers_one,
               **{f"{name} forward": lambda b=backend: b.run(single) for name, backend in backends.items()
                  if name.startswith("onnxruntime")}}
    latency = {name: interleaved_medians({name: fn}, repeats=args.latency_calls, warmup=10)[name]
               for name, fn in singles.items()}
    shutil.rmtree(tmp)

    real = sum(int(b["attention_mask"].sum()) for b in by_length)
    print(f"# inference backends, {datetime.date.today()}, {machine()}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"# all-MiniLM-L6-v2, {len(texts)} sentences, {real} real tokens, batches of {bs}, "
          f"median of {args.repeats} interleaved runs")
    print(f"{'run':<38}{'seconds':>9}{'tokens/s':>11}{'bertkit fp32 e2e is':>22}")
    base = times["bertkit fp32 e2e"]
    for name, seconds in times.items():
        print(f"{name:<38}{seconds:>9.3f}{real / seconds:>11.0f}{seconds / base:>21.2f}x")
    for label, streams_note in (("", ""), (", 1 stream", " (1 stream)")):
        ratio = times[f"bertkit fp32 sorted{label}"] / times[f"bertkit int8 sorted{label}"]
        print(f"# int8 / fp32 on the same sorted batches{streams_note}: {ratio:.2f}x")
    print(f"# single request: {int(single['attention_mask'].sum())} tokens, batch 1, "
          f"median of {args.latency_calls} calls, one backend at a time")
    print(f"{'run':<30}{'ms':>9}")
    for name, seconds in latency.items():
        print(f"{name:<30}{1000 * seconds:>9.2f}")


if __name__ == "__main__":
    main()
