"""Inference throughput: bertkit vs transformers on the same checkpoint, in one run.

Two comparisons, both counting real (non-pad) tokens per second, median of interleaved runs:
  (a) end to end: the same sentences in the same order, each library used as its docs suggest
      (bertkit sorts by length inside ``embed_texts``; transformers gets batches of 32 in order);
  (b) same batches: identical padded tensors into both models.
Also prints the useful GFLOP/s each reaches against a large fp32 matmul timed in the same run.

    python benchmarks/inference.py [--threads 2] [--repeats 5] [--sentences 512]
"""

from __future__ import annotations

import argparse
import datetime

import torch
import transformers

from bertkit import BertModel, Tokenizer
from bertkit.infer.encode import embed_texts
from common import interleaved_medians, machine, matmul_gflops, minilm_dir, mixed_sentences


def forward_flops(config, lengths: list[int]) -> float:
    """Matmul FLOPs of an encoder forward over sequences of the given lengths (no padding)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = 2 * (4 * h * h + 2 * h * i)  # QKV + output projection + feed-forward
    return layers * sum(n * per_token + 4 * n * n * h for n in lengths)  # + QK^T and AV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    path = minilm_dir()
    texts = mixed_sentences(args.sentences)
    ours = BertModel.from_pretrained(path).eval()
    tokenizer = Tokenizer.from_pretrained(path)
    refs = {
        impl: transformers.BertModel.from_pretrained(str(path), attn_implementation=impl).eval()
        for impl in ("eager", "sdpa")
    }
    ref_tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    bs = args.batch_size
    batches = [ref_tokenizer(texts[i:i + bs], padding=True, truncation=True, return_tensors="pt")
               for i in range(0, len(texts), bs)]
    lengths = [int(n) for b in batches for n in b["attention_mask"].sum(1)]
    real_tokens = sum(lengths)
    padded_tokens = sum(b["input_ids"].numel() for b in batches)

    def ours_e2e():
        embed_texts(ours, tokenizer, texts, pooling="cls", batch_size=bs)

    def ref_e2e(model):
        with torch.inference_mode():
            for i in range(0, len(texts), bs):
                model(**ref_tokenizer(texts[i:i + bs], padding=True, truncation=True, return_tensors="pt"))

    def same_batches(model):
        with torch.inference_mode():
            for b in batches:
                model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])

    runs = {"bertkit e2e": ours_e2e, "bertkit same": lambda: same_batches(ours)}
    for impl, model in refs.items():
        runs[f"transformers-{impl} e2e"] = lambda m=model: ref_e2e(m)
        runs[f"transformers-{impl} same"] = lambda m=model: same_batches(m)
    times = interleaved_medians(runs, repeats=args.repeats)
    peak = matmul_gflops()
    flops = forward_flops(ours.config, lengths)

    print(f"# inference, {datetime.date.today()}, {machine()}")
    print(f"# all-MiniLM-L6-v2, {len(texts)} sentences, {real_tokens} real tokens "
          f"({padded_tokens} when padded in order by {bs}), median of {args.repeats} interleaved runs")
    print(f"{'run':<26}{'seconds':>9}{'tokens/s':>11}{'useful GFLOP/s':>16}")
    for name, seconds in times.items():
        print(f"{name:<26}{seconds:>9.3f}{real_tokens / seconds:>11.0f}{flops / seconds / 1e9:>16.1f}")
    print(f"{'fp32 matmul 2048^3 peak':<26}{'':>9}{'':>11}{peak:>16.1f}")
    for mode in ("e2e", "same"):
        for impl in refs:
            ratio = times[f"transformers-{impl} {mode}"] / times[f"bertkit {mode}"]
            print(f"ratio bertkit / transformers-{impl} ({mode}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
