"""Pretraining throughput: bertkit vs transformers' BertForPreTraining, same config, same batches, in one run.

Each training step is forward + backward + an AdamW update on an MLM + NSP batch of real token ids (the fixture
corpus tokenized with the MiniLM vocabulary), rows of mixed lengths padded to the longest, 15% of the real tokens
masked 80/10/10. transformers gets ``labels`` (B, T) with -100 and ``next_sentence_label``; bertkit gets
``mlm_labels`` / ``nsp_labels``. Both use torch's AdamW and the same dropout. Reported: real (non-pad) tokens per
second, median of interleaved steps, and the ratio. On a GPU (``--device cuda``) both run under the same autocast
(``--precision bf16``) and, with ``--compile``, both through ``torch.compile``; each step ends in a synchronise.

    python benchmarks/pretrain.py [--threads 2] [--repeats 5] [--models mini,base]
    python benchmarks/pretrain.py --device cuda --precision bf16 [--batch 256] [--compile]
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
import torch
import transformers

from bertkit import BertConfig, BertForPreTraining, Tokenizer
from bertkit.config import DTYPES
from bertkit.data.pretraining import mask_tokens
from common import interleaved_medians, machine, minilm_dir

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "corpus"
SHAPES = {"mini": (32, 128), "base": (8, 128)}  # batch, sequence length


def token_stream(tokenizer: Tokenizer) -> np.ndarray:
    texts = [p.read_text(encoding="utf-8") for p in sorted(CORPUS.glob("*.txt"))]
    return np.concatenate([np.asarray(ids, dtype=np.int64) for ids in tokenizer.tokenize_ids(texts)])


def make_batch(tokenizer: Tokenizer, stream: np.ndarray, batch: int, length: int, seed: int) -> dict:
    """``[CLS] A [SEP] B [SEP]`` rows of lengths spread over [length/2, length], padded; 15% masked."""
    rng = np.random.default_rng(seed)
    ids = np.full((batch, length), tokenizer.pad_id, dtype=np.int64)
    types = np.zeros_like(ids)
    for row, n in enumerate(np.linspace(length // 2, length, batch).astype(int)):
        start, a_len = int(rng.integers(len(stream) - length)), int(rng.integers(2, n - 3))
        body = stream[start : start + n - 3]
        ids[row, :n] = [tokenizer.cls_id, *body[: a_len - 1], tokenizer.sep_id, *body[a_len - 1 :], tokenizer.sep_id]
        types[row, a_len + 1 : n] = 1
    attention = (ids != tokenizer.pad_id).astype(np.int64)
    special = np.isin(ids, sorted(tokenizer.special_ids))
    masked, labels = mask_tokens(ids, special, rng, tokenizer.vocab_size, tokenizer.mask_id,
                                 special_ids=sorted(tokenizer.special_ids))
    tensors = {k: torch.from_numpy(v) for k, v in
               {"input_ids": masked, "token_type_ids": types, "attention_mask": attention, "labels": labels}.items()}
    tensors["nsp"] = torch.from_numpy(rng.integers(0, 2, batch))
    return tensors


def trainer_step(model: torch.nn.Module, inputs: dict, args: argparse.Namespace):
    device = torch.device(args.device)
    model.to(device)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    forward = torch.compile(model) if args.compile else model
    dtype = DTYPES[args.precision]

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = forward(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def compare(name: str, tokenizer: Tokenizer, stream: np.ndarray, args: argparse.Namespace) -> None:
    batch, length = SHAPES[name]
    batch = args.batch or batch
    config = BertConfig.preset(name, vocab_size=tokenizer.vocab_size)
    data = make_batch(tokenizer, stream, batch, length, seed=0)
    common = {k: data[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    torch.manual_seed(0)
    ours = BertForPreTraining(config).train()
    ref_config = transformers.BertConfig(**{k: v for k, v in config.to_dict().items() if k != "architectures"})
    ref = transformers.BertForPreTraining(ref_config).train()
    steps = {
        "bertkit": trainer_step(ours, {**common, "mlm_labels": data["labels"], "nsp_labels": data["nsp"]}, args),
        "transformers": trainer_step(ref, {**common, "labels": data["labels"], "next_sentence_label": data["nsp"]},
                                     args),
    }
    times = interleaved_medians(steps, repeats=args.repeats, warmup=3 if args.compile else 1)
    tokens = int(data["attention_mask"].sum())
    rate = {k: tokens / t for k, t in times.items()}
    print(f"{name:<5} batch {batch} x {length} ({tokens} real tokens, {int((data['labels'] != -100).sum())} masked): "
          f"transformers {rate['transformers']:8.0f} tok/s   bertkit {rate['bertkit']:8.0f} tok/s   "
          f"ratio {rate['bertkit'] / rate['transformers']:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="mini,base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="autocast dtype for both")
    parser.add_argument("--batch", type=int, default=None, help="rows per step (default: 32 mini, 8 base)")
    parser.add_argument("--compile", action="store_true", help="both models through torch.compile")
    parser.add_argument("--tokenizer", help="directory with the MiniLM tokenizer files (default: the installed one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    where = (f"{torch.cuda.get_device_name(args.device)}, torch {torch.__version__}" if args.device.startswith("cuda")
             else machine())
    tokenizer = Tokenizer.from_pretrained(args.tokenizer or minilm_dir())
    stream = token_stream(tokenizer)
    print(f"# pretraining step (fwd + bwd + AdamW), {datetime.date.today()}, {where}, "
          f"transformers {transformers.__version__}, {args.precision}{', compiled' if args.compile else ''}, "
          f"median of {args.repeats} interleaved steps")
    for name in args.models.split(","):
        compare(name, tokenizer, stream, args)


if __name__ == "__main__":
    main()
