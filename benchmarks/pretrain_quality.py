"""Pretraining quality per CPU-minute: bertkit's budgeted default against transformers trained as run_mlm.py does.

Both sides get the same WordPiece vocabulary (trained by bertkit on the training books), the same books, the same
time budget and the BERT-Mini shape (4 layers, hidden 256):

* bertkit: ``bertkit prepare BOOKS --tokenizer T --out S --max-seq-len 128`` then
  ``bertkit pretrain --data S --preset mini --max-minutes M``, no other flag (the studied budget recipe);
* transformers: the recipe of its ``run_mlm.py`` example: every line tokenized with [CLS] / [SEP], concatenated and
  cut into blocks of 128, ``DataCollatorForLanguageModeling`` (15%, 80/10/10), AdamW (lr ``--hf-lr``, batch
  ``--hf-batch-size``, weight decay 0.01), linear warm-up and decay over the budget (warm-up 5% of it), with the
  budget counted as bertkit counts it: training steps only.

One function, :func:`score`, loads each model with transformers' ``BertForMaskedLM`` and measures masked-LM accuracy
and loss on blocks of the held-out books masked once with a fixed seed. transformers is also scored every
``--hf-eval-every`` seconds of its training, which gives "minutes transformers needs to reach bertkit's accuracy".

    python benchmarks/pretrain_quality.py --minutes 5 10 20
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from bertkit.cli import main as bertkit
from bertkit.config import IGNORE
from bertkit.data.pretraining import mask_tokens
from bertkit.tokenizer import Tokenizer
from bertkit.train.optim import lr_factor_at
from common import SHARED_DATA, machine

BLOCK = 128
MINI = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)


def books(heldout: int, limit: int | None) -> tuple[list[str], list[str]]:
    """(training books, held-out books): the last ``heldout`` are held out; ``limit`` caps the training books."""
    found = sorted(str(p) for p in (SHARED_DATA / "corpus" / "gutenberg_set_a").glob("*.txt"))
    if len(found) <= heldout:
        raise SystemExit(f"{SHARED_DATA / 'corpus'}: need more than {heldout} gutenberg_set_a books")
    return found[:-heldout][:limit], found[-heldout:]


def blocks(files: list[str], tokenizer: Tokenizer, limit: int | None = None) -> torch.Tensor:
    """run_mlm.py's ``group_texts``: each line as [CLS] ids [SEP], all concatenated, cut into blocks. (N, BLOCK)"""
    lines = [line for f in files for line in Path(f).read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip()]
    flat: list[int] = []
    for ids in tokenizer.tokenize_ids(lines):
        flat += [tokenizer.cls_id, *ids, tokenizer.sep_id]
    usable = len(flat) // BLOCK * BLOCK
    out = torch.tensor(flat[:usable]).view(-1, BLOCK)
    return out if limit is None else out[:limit]


def score(model_dir: str, heldout: torch.Tensor, tokenizer: Tokenizer) -> dict[str, float]:
    """Held-out masked-LM accuracy and loss of a model folder, loaded with transformers' BertForMaskedLM."""
    model = transformers.BertForMaskedLM.from_pretrained(model_dir).eval()
    special = np.isin(heldout.numpy(), list(tokenizer.special_ids))
    ids, labels = mask_tokens(heldout.numpy(), special, np.random.default_rng(0), tokenizer.vocab_size,
                              tokenizer.mask_id, special_ids=sorted(tokenizer.special_ids))
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(ids), 64):
            x, y = torch.from_numpy(ids[start:start + 64]), torch.from_numpy(labels[start:start + 64])
            logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[y != IGNORE]
            targets = y[y != IGNORE]
            loss_sum += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            correct += (logits.argmax(-1) == targets).sum().item()
            count += targets.numel()
    return {"accuracy": correct / count, "loss": loss_sum / count}


def train_transformers(work: Path, train: torch.Tensor, tokenizer: Tokenizer, minutes: float,
                       args: argparse.Namespace, heldout: torch.Tensor) -> list[dict[str, float]]:
    """run_mlm-style training for ``minutes`` of training time; returns its scores along the way."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id, **MINI)
    model = transformers.BertForMaskedLM(config).train()
    hf_tok = transformers.BertTokenizerFast(vocab_file=str(work / "tok" / "vocab.txt"), do_lower_case=True)
    collator = transformers.DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0}],
                                  lr=args.hf_lr)
    budget, spent, next_eval, curve = 60 * minutes, 0.0, args.hf_eval_every, []
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    step = 0
    while spent < budget:
        started = time.perf_counter()
        rows = order[(step * args.hf_batch_size) % len(train):][: args.hf_batch_size]
        batch = collator([{"input_ids": r} for r in train[rows]])
        for group in optimizer.param_groups:
            group["lr"] = args.hf_lr * lr_factor_at(spent / budget, warmup_share=0.05)
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        spent += time.perf_counter() - started
        step += 1
        if spent >= next_eval or spent >= budget:
            folder = work / f"hf-{minutes:g}"
            model.save_pretrained(folder)
            curve.append({"minutes": spent / 60, "steps": step, **score(str(folder), heldout, tokenizer)})
            model.train()
            next_eval += args.hf_eval_every
    return curve


def minutes_to_reach(curve: list[dict[str, float]], accuracy: float) -> str:
    reached = [point["minutes"] for point in curve if point["accuracy"] >= accuracy]
    return f"{reached[0]:.1f}" if reached else f"> {curve[-1]['minutes']:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--heldout-books", type=int, default=2)
    parser.add_argument("--max-books", type=int, help="train on the first N books only (quick checks)")
    parser.add_argument("--heldout-blocks", type=int, default=1000)
    parser.add_argument("--hf-lr", type=float, default=1e-3)
    parser.add_argument("--hf-batch-size", type=int, default=64)
    parser.add_argument("--hf-eval-every", type=float, default=60.0, help="seconds of transformers' training")
    parser.add_argument("--work", type=Path, default=Path("runs/pretrain_quality"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work
    train_files, heldout_files = books(args.heldout_books, args.max_books)
    if not (work / "tok" / "vocab.txt").is_file():
        Tokenizer.train(train_files, vocab_size=args.vocab_size).save_pretrained(work / "tok")
    tokenizer = Tokenizer.from_pretrained(work / "tok")
    if not (work / "shards" / "manifest.json").is_file():
        assert bertkit(["prepare", *train_files, "--tokenizer", str(work / "tok"), "--out", str(work / "shards"),
                        "--max-seq-len", str(BLOCK)]) == 0
    heldout = blocks(heldout_files, tokenizer, args.heldout_blocks)
    train = blocks(train_files, tokenizer)
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M} {machine()}, load {os.getloadavg()[0]:.1f}")
    print("| budget (min) | bertkit acc | bertkit loss | bertkit steps | transformers acc | transformers loss | "
          "transformers steps | transformers minutes to bertkit's acc |\n|---:|---:|---:|---:|---:|---:|---:|---|")
    for minutes in args.minutes:
        out = work / f"bertkit-{minutes:g}"
        if not (out / "model.safetensors").is_file():
            assert bertkit(["pretrain", "--data", str(work / "shards"), "--out", str(out), "--preset", "mini",
                            "--max-minutes", f"{minutes:g}", "--no-progress"]) == 0
        ours = score(str(out), heldout, tokenizer)
        steps = json.loads((out / "pretrain.json").read_text())["summary"]["step"]
        curve = train_transformers(work, train, tokenizer, minutes, args, heldout)
        theirs = curve[-1]
        print(f"| {minutes:g} | {ours['accuracy']:.3f} | {ours['loss']:.3f} | {steps} | {theirs['accuracy']:.3f} | "
              f"{theirs['loss']:.3f} | {theirs['steps']} | {minutes_to_reach(curve, ours['accuracy'])} |",
              flush=True)
        (work / f"curve-{minutes:g}.json").write_text(json.dumps(curve, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
