"""int8 accuracy and speed: which encoder linears to quantise, and how.

For each recipe: cosine of every int8 sentence embedding (mean pooling) to the fp32 one over the same
sentences (mean and min), and the speed ratio fp32 time / int8 time on the same length-sorted batches,
median of interleaved runs. The first row is torch's stock dynamic recipe as a reference point; the rest
run on oneDNN unless named otherwise. Recipes that need calibration get the built-in calibration
sentences (:data:`bertkit.infer.quantize.CALIBRATION_TEXTS`), not the benchmark's.

    python benchmarks/quantize.py [--threads 2] [--sentences 512] [--repeats 3] [--only NAME,NAME]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os

import numpy as np
import torch

from bertkit import BertModel, Tokenizer
from bertkit.data.batching import length_sorted_batches
from bertkit.infer.embed import pool
from bertkit.infer.quantize import DEFAULT_RECIPE, Int8Recipe, calibration_batch, quantize_int8
from common import interleaved_medians, machine, minilm_dir, mixed_sentences

RECIPES: dict[str, Int8Recipe] = {
    "stock": Int8Recipe(per_channel=False, reduce_range=True, weight_bits=8, fp32_channels=0, smooth=None,
                        engine="fbgemm"),
    "per-tensor-w8a8": Int8Recipe(per_channel=False, weight_bits=8, fp32_channels=0, smooth=None),
    "w8a7": Int8Recipe(reduce_range=True, weight_bits=8, fp32_channels=0, smooth=None),
    "w8a8": Int8Recipe(weight_bits=8, fp32_channels=0, smooth=None),
    "w7a8": Int8Recipe(fp32_channels=0, smooth=None),
    "no-fc2": Int8Recipe(("qkv", "out_proj", "fc1"), smooth=None),
    "fc2-1ch": Int8Recipe(fp32_channels=1, smooth=None),
    "fc2-4ch": Int8Recipe(fp32_channels=4, smooth=None),
    "smooth-only": Int8Recipe(fp32_channels=0, smooth=0.5),
    "fc2-4ch-smooth": Int8Recipe(fp32_channels=4, smooth=0.5),
    "fc2-4ch-smooth-fbgemm": Int8Recipe(fp32_channels=4, smooth=0.5, engine="fbgemm"),
}
DESCRIPTIONS = {
    "stock": "all linears, per-tensor, w8 a7 (torch's stock dynamic, fbgemm)",
    "per-tensor-w8a8": "all linears, per-tensor, w8 a8",
    "w8a7": "all linears, per-channel, w8 a7",
    "w8a8": "all linears, per-channel, w8 a8",
    "w7a8": "all linears, per-channel, w7 a8",
    "no-fc2": "qkv + out_proj + fc1, w7 a8 (fc2 fp32)",
    "fc2-1ch": "w7a8, fc2's largest input channel fp32",
    "fc2-4ch": "w7a8, fc2's 4 largest input channels fp32",
    "smooth-only": "w7a8, qkv/fc1 inputs smoothed (0.5)",
    "fc2-4ch-smooth": "fc2-4ch + qkv/fc1 inputs smoothed (0.5)",
    "fc2-4ch-smooth-fbgemm": "as fc2-4ch-smooth on fbgemm (GELU not fused)",
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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help=f"comma-separated recipe names among {', '.join(RECIPES)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = [name for name in args.only.split(",") if name] or list(RECIPES)
    unknown = [name for name in chosen if name not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown}; choose from {', '.join(RECIPES)}")

    path = minilm_dir()
    texts = mixed_sentences(args.sentences)
    tokenizer = Tokenizer.from_pretrained(path)
    fp32 = BertModel.from_pretrained(path).eval()
    batches = sorted_batches(tokenizer, texts, args.batch_size)
    reference = embeddings(fp32, batches, len(texts))
    calibration = [calibration_batch(tokenizer)]

    print(f"# int8 recipes, {datetime.date.today()}, {machine()}, load average {os.getloadavg()[0]:.1f} at start")
    print(f"# all-MiniLM-L6-v2, {len(texts)} sentences, mean pooling, batches of {args.batch_size} sorted by length; "
          f"speed = fp32 seconds / int8 seconds, median of {args.repeats} interleaved runs")
    print(f"{'recipe':<26}{'what':<64}{'cos mean':>9}{'cos min':>9}{'fp32 s':>8}{'int8 s':>8}{'speed':>8}")
    for name in chosen:
        recipe = RECIPES[name]
        model = copy.deepcopy(fp32)
        quantize_int8(model, recipe, calibration)
        cos = cosines(embeddings(model, batches, len(texts)), reference)
        times = interleaved_medians(
            {"fp32": lambda: embeddings(fp32, batches, len(texts)),
             "int8": lambda m=model: embeddings(m, batches, len(texts))},
            repeats=args.repeats,
        )
        label = name + (" (default)" if recipe == DEFAULT_RECIPE else "")
        print(f"{label:<26}{DESCRIPTIONS[name]:<64}{cos.mean():>9.4f}{cos.min():>9.4f}{times['fp32']:>8.3f}"
              f"{times['int8']:>8.3f}{times['fp32'] / times['int8']:>7.2f}x", flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
