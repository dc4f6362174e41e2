"""Fine-tuning quality and speed: bertkit vs transformers from the same checkpoint, features, order and schedule.

Both runs start from identical weights (all-MiniLM-L6-v2 under the same seeded fresh head), see identical feature
tensors batch by batch in the same order (bertkit's TaskBatches), and use the same AdamW parameter groups,
warm-up + linear decay, gradient clipping and dev scoring. Only the model code and the training loop differ:
bertkit runs `run_finetune`; the reference is a transformers model in a plain PyTorch loop. Dropout draws differ,
so the dev figures agree within noise, not exactly. Dev sets are held out from the training files (the shared
data has no GLUE / SQuAD dev splits); CoNLL-2003 uses its validation file.

    python benchmarks/finetune.py --task sst2  [--train-size 4000 --dev-size 872 --max-seq-len 64]
    python benchmarks/finetune.py --task mrpc  [--max-seq-len 128]
    python benchmarks/finetune.py --task rte
    python benchmarks/finetune.py --task conll [--train-size 3000]
    python benchmarks/finetune.py --task squad [--train-size 2000 --dev-size 500 --max-seq-len 256]

``--seed`` seeds training (head weights, dropout, batch order); ``--data-seed`` the train / dev split, so runs
with other training seeds on the same data measure seed-to-seed noise (``--only bertkit --seed 43``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import tempfile
import time
from pathlib import Path

import torch
import transformers

from bertkit import Tokenizer
from bertkit.recipes.finetune import FinetuneSettings, run_finetune
from bertkit.tasks import families
from bertkit.tasks.batches import TaskBatches
from bertkit.tasks.models import build_task_model, run_on_features
from bertkit.tasks.readers import read_squad
from bertkit.train.logging import read_metrics
from bertkit.train.optim import build_optimizer, lr_factor
from common import SHARED_DATA, machine, minilm_dir

GLUE = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "cola": "CoLA", "stsb": "STS-B"}
DEFAULTS = {  # train size, dev size, max_seq_len (None = all / the task default)
    "sst2": (4000, 872, 64), "mrpc": (None, 400, 128), "rte": (None, 277, 128),
    "cola": (None, 1000, 64), "stsb": (None, 1000, 128), "conll": (3000, None, 128), "squad": (2000, 500, 256),
}
REFERENCE = {"BertForSequenceClassification": transformers.BertForSequenceClassification,
             "BertForTokenClassification": transformers.BertForTokenClassification,
             "BertForQuestionAnswering": transformers.BertForQuestionAnswering}


def split_glue(task: str, train_size: int | None, dev_size: int, seed: int, folder: Path) -> tuple[Path, Path]:
    """Train and dev TSVs drawn without overlap from the GLUE training file (header kept; CoLA has none)."""
    lines = (SHARED_DATA / GLUE[task] / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = ([], lines) if task == "cola" else (lines[:1], lines[1:])
    random.Random(seed).shuffle(rows)
    dev, train = rows[:dev_size], rows[dev_size:]
    train = train[:train_size] if train_size else train
    paths = folder / "train.tsv", folder / "dev.tsv"
    for path, part in zip(paths, (train, dev), strict=True):
        path.write_text("\n".join(header + part) + "\n", encoding="utf-8")
    return paths


def split_conll(train_size: int, dev_size: int | None, folder: Path) -> tuple[Path, Path]:
    """The first `train_size` training sentences; the first `dev_size` validation sentences (all by default)."""
    paths = folder / "train.txt", folder / "dev.txt"
    for source, size, path in zip(("train.txt", "valid.txt"), (train_size, dev_size), paths, strict=True):
        blocks = (SHARED_DATA / "conll2003" / source).read_text(encoding="utf-8").split("\n\n")
        sentences = [b.strip("\n") for b in blocks if b.strip() and not b.startswith("-DOCSTART-")]
        path.write_text("\n\n".join(sentences[:size]) + "\n", encoding="utf-8")
    return paths


def split_squad(train_size: int, dev_size: int, seed: int, folder: Path) -> tuple[Path, Path]:
    """Answerable questions (the SQuAD v1.1 training set), split by article so no passage is in both."""
    examples, _ = read_squad(SHARED_DATA / "squad" / "train-v2.0.json.gz")
    titles = sorted({e.title for e in examples})
    random.Random(seed).shuffle(titles)
    by_title: dict[str, list] = {}
    for e in examples:
        if not e.is_impossible:
            by_title.setdefault(e.title, []).append(e)
    dev: list = []
    train: list = []
    for title in titles:
        if len(dev) < dev_size:
            dev += by_title.get(title, [])
        elif len(train) < train_size:
            train += by_title.get(title, [])
    dev, train = dev[:dev_size], train[:train_size]
    paths = folder / "train.json", folder / "dev.json"
    for path, part in zip(paths, (train, dev), strict=True):
        paragraphs = [{"context": e.context, "qas": [{"id": e.id, "question": e.question, "answers": [
            {"text": a.text, "answer_start": a.answer_start} for a in e.answers]}]} for e in part]
        path.write_text(json.dumps({"version": "1.1", "data": [{"title": "x", "paragraphs": paragraphs}]}))
    return paths


def reference_run(settings: FinetuneSettings, folder: Path) -> dict:
    """The same fine-tune with a transformers model: same initial weights, features, batches and optimizer."""
    tokenizer = Tokenizer.from_pretrained(settings.model)
    spec = settings.spec()
    train = families.read_task_file(spec, settings.train)
    spec = settings.spec(families.label_list(spec, train))
    dev = families.read_task_file(spec, settings.dev)
    train_features, dev_features = families.encode(spec, train, tokenizer), families.encode(spec, dev, tokenizer)
    build_task_model(settings.model, spec, dropout=settings.dropout, seed=settings.seed).save_pretrained(folder)
    model = REFERENCE[spec.architecture].from_pretrained(str(folder), attn_implementation="sdpa")
    source = TaskBatches(train_features, settings.batch_size, settings.seed, pad_id=tokenizer.pad_id)
    optimizer = build_optimizer(model, "adamw", lr=settings.lr, weight_decay=settings.weight_decay)
    total = settings.max_steps or sum(source.num_batches(e) for e in range(settings.epochs))
    warmup = round(settings.warmup_ratio * total)
    torch.manual_seed(settings.seed)
    model.train()
    start = time.perf_counter()
    step, epoch, index = 0, 0, 0
    while step < total:
        if index == source.num_batches(epoch):
            epoch, index = epoch + 1, 0
        loss = model(**source.batch(epoch, index)).loss
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * lr_factor(step, warmup_steps=warmup, total_steps=total)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step, index = step + 1, index + 1
    train_s = time.perf_counter() - start
    model.eval()
    outputs, _ = run_on_features(model, dev_features, batch_size=settings.eval_batch_size, pad_id=tokenizer.pad_id)
    result = families.score(spec, dev, dev_features, outputs)
    seconds = time.perf_counter() - start
    return {"dev": result, "seconds": seconds, "train_seconds": train_s, "steps": step,
            "features": len(train_features), "examples": len(train), "dev_examples": len(dev)}


def bertkit_run(settings: FinetuneSettings) -> dict:
    start = time.perf_counter()
    summary = run_finetune(settings)
    wall = time.perf_counter() - start
    records = read_metrics(settings.out / "metrics.jsonl")
    evals = [r for r in records if "duration" in r]
    # The reference scores dev once, at the end; bertkit also scores it after each epoch: not counted.
    between = sum(r["duration"] for r in evals[:-1])
    train_s = max(r["elapsed"] for r in records if "loss" in r) - between
    return {"dev": summary["dev"], "seconds": evals[-1]["elapsed"] - between, "train_seconds": train_s,
            "wall": wall, "steps": summary["steps"], "features": summary["train_features"],
            "epochs": [{k: v for k, v in r.items() if k.startswith("eval_")} for r in evals]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(DEFAULTS), required=True)
    parser.add_argument("--train-size", type=int)
    parser.add_argument("--dev-size", type=int)
    parser.add_argument("--max-seq-len", type=int)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, help="default: 3e-5 (5e-5 for squad)")
    parser.add_argument("--seed", type=int, default=42, help="training seed: head weights, dropout, batch order")
    parser.add_argument("--data-seed", type=int, default=42, help="seed of the train / dev split")
    parser.add_argument("--only", choices=("bertkit", "transformers"), help="run one side alone")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-first", action="store_true", help="run transformers before bertkit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_size, dev_size, seq_len = DEFAULTS[args.task]
    train_size, dev_size = args.train_size or train_size, args.dev_size or dev_size
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.task == "conll":
            train, dev = split_conll(train_size, dev_size, folder)
        elif args.task == "squad":
            train, dev = split_squad(train_size, dev_size, args.data_seed, folder)
        else:
            train, dev = split_glue(args.task, train_size, dev_size, args.data_seed, folder)
        settings = FinetuneSettings(
            model=minilm_dir(), out=folder / "out", task={"conll": "tag", "squad": "qa"}.get(args.task),
            glue=args.task if args.task in GLUE else None, train=train, dev=dev, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, max_seq_len=args.max_seq_len or seq_len, seed=args.seed,
            save_every=0, progress=False)
        runs = {}
        order = ("transformers", "bertkit") if args.reference_first else ("bertkit", "transformers")
        for name in [args.only] if args.only else order:
            runs[name] = bertkit_run(settings) if name == "bertkit" else reference_run(settings, folder / "ref")
            print(f"# {name}: {json.dumps(runs[name])}", flush=True)  # kept in the log if the other run fails
        if args.only:
            scores = {k: round(100 * v, 2) for k, v in runs[args.only]["dev"].items()
                      if not k.endswith(("total", "missing", "loss"))}
            print(f"# {args.only} alone, {args.task}, seed {args.seed}, data seed {args.data_seed}: dev {scores}")
        else:
            report(args, settings, runs)


def report(args: argparse.Namespace, settings: FinetuneSettings, runs: dict) -> None:
    ours, ref = runs["bertkit"], runs["transformers"]
    print(f"# fine-tune {args.task}: {datetime.date.today()}, {machine()}, transformers {transformers.__version__}")
    print(f"# {ref['examples']} train examples ({ref['features']} features), {ref['dev_examples']} dev, "
          f"max_seq_len {settings.max_seq_len}, batch {settings.batch_size}, lr {settings.lr}, "
          f"{args.epochs} epoch(s) = {ours['steps']} steps, seed {settings.seed}, data seed {args.data_seed}")
    keys = [k for k in ref["dev"] if k in ours["dev"] and not k.endswith(("total", "missing"))]
    print(f"{'metric':<22}{'bertkit':>12}{'transformers':>14}{'diff':>10}")
    for key in keys:
        a, b = 100 * ours["dev"][key], 100 * ref["dev"][key]
        print(f"dev {key:<18}{a:>12.2f}{b:>14.2f}{a - b:>10.2f}")
    for label, key in (("train+eval seconds", "seconds"), ("train seconds", "train_seconds")):
        print(f"{label:<22}{ours[key]:>12.1f}{ref[key]:>14.1f}   ratio (transformers / bertkit) "
              f"{ref[key] / ours[key]:.2f}")
    rate = [r["features"] * args.epochs / r["train_seconds"] for r in (ours, ref)]
    print(f"{'train examples/s':<22}{rate[0]:>12.1f}{rate[1]:>14.1f}   ratio (bertkit / transformers) "
          f"{rate[0] / rate[1]:.2f}")
    print(f"bertkit run_finetune wall (with reading, tokenizing, saving): {ours['wall']:.1f} s")
    for i, metrics in enumerate(ours["epochs"][:-1], 1):
        print(f"bertkit dev after epoch {i}: " + ", ".join(f"{k[5:]} {100 * v:.2f}" for k, v in metrics.items()
                                                          if not k.endswith(("loss", "total", "missing"))))


if __name__ == "__main__":
    main()
