"""CPU inference in one run: bertkit (fp32, int8), transformers (eager, sdpa) and onnxruntime (fp32, int8).

Every row embeds the same sentences with the same checkpoint (all-MiniLM-L6-v2); median of interleaved runs,
tokens/s counts real (non-pad) tokens, and the ratios are printed at the end.

  e2e        bertkit ``embed_texts`` (tokenize, sort by length, batch, forward, mean-pool) and transformers
             as its docs suggest (tokenize batches of 32 in input order, forward)
  in order   forward only, on the padded batches of 32 in input order that transformers makes (the same
             tensors for every backend)
  sorted     forward only, on bertkit's own length-sorted batches, in the same order for every backend
  1 stream   bertkit one batch at a time on all threads, as the other backends run; without it bertkit runs
             two batches at once, one thread each (its default, :mod:`bertkit.infer.parallel_batches`)
  2 streams  onnxruntime given bertkit's schedule: two runs in flight on a one-thread session

Then: the cosine of each int8 sentence embedding to its fp32 one, and single-request latency (one 16-token
text, batch 1; end to end for bertkit and transformers, forward only for onnxruntime; one backend at a time).

    python benchmarks/inference.py [--threads 2] [--repeats 5] [--sentences 512] [--latency-calls 300]
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
from bertkit.data.batching import length_sorted_batches
from bertkit.infer.embed import embed_texts
from bertkit.infer.onnx_backend import OnnxBackend
from bertkit.infer.onnx_export import export_onnx, quantize_onnx
from bertkit.infer.parallel_batches import run_batches, streams_for
from bertkit.infer.quantize import calibration_batch, quantize_int8
from bertkit.infer.torch_backend import TorchBackend
from common import interleaved_medians, machine, matmul_gflops, minilm_dir, mixed_sentences


def forward_flops(config, lengths: list[int]) -> float:
    """Matmul FLOPs of an encoder forward over sequences of the given lengths (no padding)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = 2 * (4 * h * h + 2 * h * i)  # QKV + output projection + feed-forward
    return layers * sum(n * per_token + 4 * n * n * h for n in lengths)  # + QK^T and AV


def sorted_batches(tokenizer: Tokenizer, texts: list[str], batch_size: int) -> list[dict[str, torch.Tensor]]:
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts, max_length=512, truncation=True)]
    return [tokenizer.batch_encode([texts[i] for i in indices], max_length=512)
            for indices in length_sorted_batches(lengths, batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
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
    refs = {impl: transformers.BertModel.from_pretrained(str(path), attn_implementation=impl).eval()
            for impl in ("eager", "sdpa")}
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

    def run_all(run, batches, side_by_side=False):
        for _ in run_batches(run, batches, streams if side_by_side else None):
            pass

    def transformers_e2e(model):
        with torch.inference_mode():
            for i in range(0, len(texts), bs):
                model(**ref_tokenizer(texts[i:i + bs], padding=True, truncation=True, return_tensors="pt"))

    def transformers_forward(model):
        def run(batch):
            with torch.inference_mode():
                return model(**batch)
        return run

    def e2e(model, count=None):
        return lambda: embed_texts(model, tokenizer, texts, pooling="mean", batch_size=bs, streams=count)

    runs = {"bertkit fp32 e2e": e2e(fp32), "bertkit int8 e2e": e2e(int8),
            "bertkit fp32 e2e, 1 stream": e2e(fp32, 1), "bertkit int8 e2e, 1 stream": e2e(int8, 1)}
    for impl, model in refs.items():
        runs[f"transformers-{impl} e2e"] = lambda m=model: transformers_e2e(m)
        runs[f"transformers-{impl} in order"] = lambda m=model: run_all(transformers_forward(m), in_order)
    for name, backend in backends.items():
        ours = name.startswith("bertkit")
        runs[f"{name} in order"] = lambda b=backend, s=ours: run_all(b.run, in_order, side_by_side=s)
        runs[f"{name} sorted"] = lambda b=backend, s=ours: run_all(b.run, by_length, side_by_side=s)
        if ours:
            runs[f"{name} in order, 1 stream"] = lambda b=backend: run_all(b.run, in_order)
            runs[f"{name} sorted, 1 stream"] = lambda b=backend: run_all(b.run, by_length)
    runs["onnxruntime fp32 in order, 2 streams"] = lambda: run_all(onnx_one_thread.run, in_order, side_by_side=True)
    times = interleaved_medians(runs, repeats=args.repeats)
    peak = matmul_gflops()

    exact = embed_texts(fp32, tokenizer, texts, normalize=True)
    cosine = (exact * embed_texts(int8, tokenizer, texts, normalize=True)).sum(1)
    latency = single_request_latency(tokenizer, texts[0], fp32, int8, refs["sdpa"], ref_tokenizer, backends,
                                     args.latency_calls)
    shutil.rmtree(tmp)

    real = sum(int(b["attention_mask"].sum()) for b in by_length)
    flops = forward_flops(fp32.config, [int(n) for b in by_length for n in b["attention_mask"].sum(1)])
    padded = sum(b["input_ids"].numel() for b in in_order)
    print(f"# inference, {datetime.date.today()}, {machine()}, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"# all-MiniLM-L6-v2, {len(texts)} sentences, {real} real tokens ({padded} padded in order), batches of "
          f"{bs}, median of {args.repeats} interleaved runs; fp32 matmul 2048^3 in this run: {peak:.1f} GFLOP/s")
    print(f"{'run':<38}{'seconds':>9}{'tokens/s':>11}{'useful GFLOP/s':>16}{'bertkit fp32 e2e is':>22}")
    base = times["bertkit fp32 e2e"]
    for name, seconds in times.items():
        print(f"{name:<38}{seconds:>9.3f}{real / seconds:>11.0f}{flops / seconds / 1e9:>16.1f}"
              f"{seconds / base:>21.2f}x")
    ratios = {
        "bertkit fp32 e2e vs transformers-eager e2e (target 1.8x)": ("transformers-eager e2e", "bertkit fp32 e2e"),
        "bertkit fp32 e2e vs transformers-sdpa e2e": ("transformers-sdpa e2e", "bertkit fp32 e2e"),
        # bertkit tokenizes, sorts and skips padding; onnxruntime gets pre-tokenized padded batches in order
        "bertkit fp32 e2e vs onnxruntime fp32 in order (target 1.5x)": ("onnxruntime fp32 in order",
                                                                        "bertkit fp32 e2e"),
        "bertkit fp32 e2e vs onnxruntime fp32 in order, 2 streams": ("onnxruntime fp32 in order, 2 streams",
                                                                     "bertkit fp32 e2e"),
        "same sorted batches, forward only: bertkit fp32 vs onnxruntime fp32": ("onnxruntime fp32 sorted",
                                                                              "bertkit fp32 sorted"),
        "same in-order batches, forward only: bertkit fp32 vs onnxruntime fp32": ("onnxruntime fp32 in order",
                                                                                "bertkit fp32 in order"),
        "same in-order batches, both 2 streams: bertkit fp32 vs onnxruntime fp32": (
            "onnxruntime fp32 in order, 2 streams", "bertkit fp32 in order"),
        "int8 vs fp32, bertkit sorted (target 1.4x)": ("bertkit fp32 sorted", "bertkit int8 sorted"),
        "int8 vs fp32, bertkit sorted, 1 stream": ("bertkit fp32 sorted, 1 stream", "bertkit int8 sorted, 1 stream"),
        "same batches, bertkit 1 stream vs transformers-eager": ("transformers-eager in order",
                                                                 "bertkit fp32 in order, 1 stream"),
        "same batches, bertkit 1 stream vs transformers-sdpa": ("transformers-sdpa in order",
                                                                "bertkit fp32 in order, 1 stream"),
    }
    for label, (slow, fast) in ratios.items():
        print(f"ratio {label}: {times[slow] / times[fast]:.2f}x")
    print(f"# int8 sentence-embedding cosine to fp32: mean {cosine.mean():.4f}, min {cosine.min():.4f} "
          f"(targets 0.99 / 0.98)")
    print(f"# single request: 16 tokens, batch 1, median of {args.latency_calls} calls, one backend at a time")
    for name, seconds in latency.items():
        print(f"{name:<38}{1000 * seconds:>9.2f} ms")


def single_request_latency(tokenizer, text, fp32, int8, ref, ref_tokenizer, backends, calls) -> dict[str, float]:
    """One backend at a time, as a service runs: interleaving single calls would charge each call for the
    previous backend's thread pool (onnxruntime's threads spin on after a run)."""
    one = tokenizer.decode(tokenizer.encode(text, max_length=16, truncation=True).ids[1:-1])
    single = tokenizer.batch_encode([one], max_length=16)

    def transformers_one():
        with torch.inference_mode():
            ref(**ref_tokenizer([one], truncation=True, max_length=16, return_tensors="pt"))

    singles = {"bertkit fp32 e2e": lambda: embed_texts(fp32, tokenizer, [one], max_length=16),
               "bertkit int8 e2e": lambda: embed_texts(int8, tokenizer, [one], max_length=16),
               "transformers-sdpa e2e": transformers_one,
               **{f"{name} forward": lambda b=backend: b.run(single) for name, backend in backends.items()
                  if name.startswith("onnxruntime")}}
    return {name: interleaved_medians({name: fn}, repeats=calls, warmup=10)[name] for name, fn in singles.items()}


if __name__ == "__main__":
    main()
