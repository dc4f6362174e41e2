"""int8 accuracy and speed: which encoder linears to quantise, and how.

For each recipe: cosine of every int8 sentence embedding (mean pooling) to the fp32 one over the same
sentences (mean and min), and the speed ratio fp32 time / int8 time on the same length-sorted batches,
median of interleaved runs. The first row is torch's stock dynamic recipe as a reference point.

    python benchmarks/quantize.py [--threads 2] [--sentences 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import datetime

import numpy as np
import torch

from bertkit import BertModel, Tokenizer
from bertkit.infer.batching import length_sorted_batches
from bertkit.infer.encode import pool
from bertkit.infer.quantize import ALL_TARGETS, DEFAULT_RECIPE, Int8Recipe, quantize_int8
from common import interleaved_medians, machine, minilm_dir, mixed_sentences

RECIPES: dict[str, Int8Recipe] = {
    "all, per-tensor, w8 a7 (stock)": Int8Recipe(ALL_TARGETS, per_channel=False, reduce_range=True, weight_bits=8),
    "all, per-tensor, w8 a8": Int8Recipe(ALL_TARGETS, per_channel=False, weight_bits=8),
    "all, per-channel, w8 a7": Int8Recipe(ALL_TARGETS, reduce_range=True, weight_bits=8),
    "all, per-channel, w8 a8": Int8Recipe(ALL_TARGETS, weight_bits=8),
    "all, per-channel, w7 a8": Int8Recipe(ALL_TARGETS),
    "qkv only": Int8Recipe(("qkv",)),
    "out_proj only": Int8Recipe(("out_proj",)),
    "fc1 only": Int8Recipe(("fc1",)),
    "fc2 only": Int8Recipe(("fc2",)),
    "qkv + out_proj + fc1 (default)": DEFAULT_RECIPE,
}


def sorted_batches(tokenizer: Tokenizer, texts: list[str], batch_size: int) -> list[tuple[list[int], dict]]:
    encodings = tokenizer.encode_batch(texts, max_length=512, truncation=True)
    out = []
    for indices in length_sorted_batches([len(e.ids) for e in encodings], batch_size):
        batch = tokenizer.batch_encode([texts[i] for i in indices], max_length=512)
        out.append((indices, batch))
    return out


@torch.inference_mode()
def embeddings(model: BertModel, batches: list[tuple[list[int], dict]], n: int) -> np.ndarray:
    out = np.zeros((n, model.config.hidden_size), dtype=np.float32)
    for indices, b in batches:
        hidden = model(b["input_ids"], b["token_type_ids"], b["attention_mask"]).last_hidden_state
        out[indices] = pool(hidden, b["attention_mask"], "mean").numpy()
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    path = minilm_dir()
    texts = mixed_sentences(args.sentences)
    tokenizer = Tokenizer.from_pretrained(path)
    fp32 = BertModel.from_pretrained(path).eval()
    batches = sorted_batches(tokenizer, texts, args.batch_size)
    reference = embeddings(fp32, batches, len(texts))

    print(f"# int8 recipes, {datetime.date.today()}, {machine()}")
    print(f"# all-MiniLM-L6-v2, {len(texts)} sentences, mean pooling, batches of {args.batch_size} sorted by length; "
          f"speed = fp32 seconds / int8 seconds, median of {args.repeats} interleaved runs")
    print(f"{'recipe':<36}{'cos mean':>10}{'cos min':>10}{'fp32 s':>9}{'int8 s':>9}{'speed':>8}")
    for name, recipe in RECIPES.items():
        model = copy.deepcopy(fp32)
        quantize_int8(model, recipe)
        cos = cosines(embeddings(model, batches, len(texts)), reference)
        times = interleaved_medians(
            {"fp32": lambda: embeddings(fp32, batches, len(texts)),
             "int8": lambda m=model: embeddings(m, batches, len(texts))},
            repeats=args.repeats,
        )
        print(f"{name:<36}{cos.mean():>10.4f}{cos.min():>10.4f}{times['fp32']:>9.3f}{times['int8']:>9.3f}"
              f"{times['fp32'] / times['int8']:>7.2f}x")


if __name__ == "__main__":
    main()
