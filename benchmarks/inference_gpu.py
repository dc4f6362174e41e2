"""GPU inference: bertkit vs transformers on one CUDA card, fp32 and bf16, in one run.

Both libraries load the same model directory: random weights in the shapes of all-MiniLM-L6-v2 and BERT-base
(throughput does not depend on the values, and no weights have to travel to the GPU machine), with the
MiniLM WordPiece vocabulary. Runs, median of interleaved repeats, each ending in a CUDA synchronise:
  bertkit e2e            ``Predictor(dir, device="cuda", dtype=...).embed(texts)``: tokenize, sort by length,
                         batch, forward, mean-pool, copy to the host;
  transformers e2e       the docs' recipe: batches of ``--batch-size`` in input order, tokenizer -> model ->
                         mean pool -> host, ``dtype=`` and ``attn_implementation="sdpa"``;
  transformers sorted    the same, but the texts sorted by token count first (what bertkit does inside);
  <lib> same             the forward alone on identical padded batches already on the card.
Also: the cosine of each run's embeddings to transformers fp32, and single-request latency (batch 1).

    python benchmarks/inference_gpu.py [--sentences 4096] [--batch-size 128] [--repeats 5] \
        [--sentences-file FILE] [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

from bertkit import BertConfig, BertModel, Tokenizer
from bertkit.config import DTYPES
from bertkit.infer.embed import pool
from bertkit.infer.predictor import Predictor
from common import interleaved_medians, minilm_dir, mixed_sentences

SHAPES = {
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
PRECISIONS = ("fp32", "bf16")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def synced(fn):
    def run():
        out = fn()
        sync()
        return out

    return run


def write_model(directory: Path, tokenizer: Tokenizer, shape: dict) -> Path:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, **shape)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def compare(name: str, directory: Path, texts: list[str], bs: int, repeats: int, device: torch.device) -> None:
    ref_tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    sorted_texts = sorted(texts, key=lambda t: len(ref_tokenizer(t)["input_ids"]))
    batches = [ref_tokenizer(texts[i:i + bs], padding=True, truncation=True, return_tensors="pt").to(device)
               for i in range(0, len(texts), bs)]
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    runs, outputs = {}, {}
    for dtype in PRECISIONS:
        ours = Predictor(directory, device=str(device), dtype=dtype, batch_size=bs, max_tokens=None)
        ref = transformers.BertModel.from_pretrained(str(directory), dtype=DTYPES[dtype],
                                                     attn_implementation="sdpa").to(device).eval()

        def ref_e2e(order, ref=ref):
            vectors = []
            with torch.inference_mode():
                for i in range(0, len(order), bs):
                    b = ref_tokenizer(order[i:i + bs], padding=True, truncation=True, return_tensors="pt").to(device)
                    vectors.append(pool(ref(**b).last_hidden_state, b["attention_mask"], "mean").float().cpu().numpy())
            return np.concatenate(vectors)

        def same(model, ours_graph: bool):
            with torch.inference_mode():
                for b in batches:
                    if ours_graph:
                        model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
                    else:
                        model(**b)

        runs[f"bertkit e2e {dtype}"] = synced(lambda p=ours: p.embed(texts).vectors)
        runs[f"transformers e2e {dtype}"] = synced(lambda f=ref_e2e: f(texts))
        runs[f"transformers sorted {dtype}"] = synced(lambda f=ref_e2e: f(sorted_texts))
        runs[f"bertkit same {dtype}"] = synced(lambda g=ours.backend.graph: same(g, True))
        runs[f"transformers same {dtype}"] = synced(lambda m=ref: same(m, False))
        outputs[f"bertkit {dtype}"] = ours.embed(texts).vectors
        outputs[f"transformers {dtype}"] = ref_e2e(texts)
        singles = {"bertkit": lambda p=ours: p.embed([texts[0]]), "transformers": lambda f=ref_e2e: f([texts[0]])}
        for lib, one in singles.items():  # one library at a time, median of 50 single requests
            outputs[f"{lib} latency {dtype}"] = 1e3 * interleaved_medians({lib: synced(one)}, 50, warmup=5)[lib]
    times = interleaved_medians(runs, repeats=repeats, warmup=2)

    print(f"\n## {name} shape: {len(texts)} sentences, {real_tokens} real tokens, batch {bs}, "
          f"median of {repeats} interleaved runs")
    print(f"{'run':<28}{'seconds':>9}{'tokens/s':>12}")
    for run, seconds in times.items():
        print(f"{run:<28}{seconds:>9.4f}{real_tokens / seconds:>12.0f}")
    for dtype in PRECISIONS:
        for other in ("e2e", "sorted", "same"):
            mine = "same" if other == "same" else "e2e"
            ratio = times[f"transformers {other} {dtype}"] / times[f"bertkit {mine} {dtype}"]
            print(f"ratio bertkit {mine} / transformers {other} ({dtype}): {ratio:.2f}x")
    reference = normalised(outputs["transformers fp32"])
    for run in ("bertkit fp32", "bertkit bf16", "transformers bf16"):
        cosine = (normalised(outputs[run]) * reference).sum(1)
        print(f"cosine {run} vs transformers fp32: mean {cosine.mean():.5f} min {cosine.min():.5f}")
    for dtype in PRECISIONS:
        ours, ref = outputs[f"bertkit latency {dtype}"], outputs[f"transformers latency {dtype}"]
        print(f"single request ({len(texts[0].split())} words), {dtype}: bertkit {ours:.2f} ms, "
              f"transformers {ref:.2f} ms")


def normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=4096)
    parser.add_argument("--sentences-file", help="one text per line (default: drawn from the shared corpus)")
    parser.add_argument("--tokenizer", help="directory with the MiniLM tokenizer files (default: the installed one)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated names of SHAPES")
    parser.add_argument("--device", default="cuda", help="a CUDA device; 'cpu' only to check the script runs")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("inference_gpu.py needs a CUDA device; benchmarks/inference.py is the CPU comparison")
    if args.sentences_file:
        texts = Path(args.sentences_file).read_text(encoding="utf-8").splitlines()[: args.sentences]
    else:
        texts = mixed_sentences(args.sentences)
    tokenizer = Tokenizer.from_pretrained(args.tokenizer or minilm_dir())
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# GPU inference, {datetime.date.today()}, {card}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            if name not in SHAPES:
                raise SystemExit(f"--shapes: unknown shape {name!r}; choose from {', '.join(SHAPES)}")
            shape = SHAPES[name]
            directory = write_model(Path(tmp) / name, tokenizer, shape)
            compare(name, directory, texts, args.batch_size, args.repeats, device)


if __name__ == "__main__":
    main()
