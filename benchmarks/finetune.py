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

The uncontrolled comparison runs each side as its users would, nothing shared but the data and the recipe:

    python benchmarks/finetune.py --task conll --uncontrolled --seeds 1 2 3 4 5 [--lr 5e-5]

bertkit is `run_finetune` with the recipe's settings only (what `bertkit finetune --task tag` does), scored
as `bertkit evaluate` scores; transformers is its standard token-classification recipe (fast tokenizer on
pre-split words, label on each word's first sub-token, `DataCollatorForTokenClassification`, a seeded random
order, torch AdamW with eps 1e-8 and no decay on biases / LayerNorm, `get_linear_schedule_with_warmup` with
ceil(10%) warm-up steps, clipping 1.0), its head drawn by transformers. Both are scored on the same words with
the same conlleval rules (a word with no kept sub-token counts as "O" on both sides).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from bertkit import Tokenizer
from bertkit.recipes.finetune import FINETUNE_ADAM_EPS, FinetuneSettings, evaluate_model, run_finetune
from bertkit.tasks import families
from bertkit.tasks.batches import TaskBatches
from bertkit.tasks.metrics import entity_scores
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
    optimizer = build_optimizer(model, "adamw", lr=settings.lr, weight_decay=settings.weight_decay,
                                eps=FINETUNE_ADAM_EPS)
    total = settings.max_steps or sum(source.num_batches(e) for e in range(settings.epochs))
    warmup = math.ceil(settings.warmup_ratio * total)  # as run_finetune
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


def standard_tagging_run(settings: FinetuneSettings, seed: int) -> dict:
    """transformers' own token-classification recipe, as its example scripts and Trainer run it."""
    examples = {name: families.read_task_file(settings.spec(), path) for name, path in
                (("train", settings.train), ("dev", settings.dev))}
    labels = sorted({t for e in examples["train"] for t in e.tags})
    transformers.set_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(settings.model))
    model = transformers.AutoModelForTokenClassification.from_pretrained(
        str(settings.model), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={t: i for i, t in enumerate(labels)}, attn_implementation="sdpa")
    (train, _), (dev, dev_words) = (standard_tagging_rows(tokenizer, examples[name], labels, settings.max_seq_len)
                                    for name in ("train", "dev"))
    collate = transformers.DataCollatorForTokenClassification(tokenizer)
    loader = torch.utils.data.DataLoader(train, batch_size=settings.batch_size, shuffle=True,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(seed))
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=settings.lr, eps=1e-8)
    total = len(loader) * settings.epochs
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, math.ceil(settings.warmup_ratio * total),
                                                            total)
    start = time.perf_counter()
    model.train()
    for _ in range(settings.epochs):
        for batch in loader:
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - start
    predicted = standard_tagging_predict(model, collate, dev, dev_words, labels, settings.eval_batch_size)
    found = entity_scores([list(e.tags) for e in examples["dev"]], predicted).overall
    return {"dev": {"precision": found.precision, "recall": found.recall, "f1": found.f1}, "steps": total,
            "train_seconds": train_s}


def standard_tagging_rows(tokenizer, examples: list, labels: list[str], max_len: int) -> tuple[list, list]:
    """Tokenized pre-split words, each word's tag on its first sub-token (-100 elsewhere); and per row each
    token's word with the sentence's word count."""
    encoded = tokenizer([list(e.tokens) for e in examples], is_split_into_words=True, truncation=True,
                        max_length=max_len)
    tag_id = {t: i for i, t in enumerate(labels)}
    rows, word_ids = [], []
    for i, example in enumerate(examples):
        words, previous, row_labels = encoded.word_ids(i), None, []
        for word in words:
            first = word is not None and word != previous
            row_labels.append(tag_id.get(example.tags[word], 0) if first else -100)
            previous = word
        rows.append({**{k: v[i] for k, v in encoded.items()}, "labels": row_labels})
        word_ids.append((words, len(example.tokens)))
    return rows, word_ids


@torch.no_grad()
def standard_tagging_predict(model, collate, rows: list[dict], word_ids: list, labels: list[str],
                             batch_size: int) -> list[list[str]]:
    """Per-word tags: argmax at each word's first sub-token; a word without one (truncated) is "O"."""
    model.eval()
    predicted = []
    for start in range(0, len(rows), batch_size):
        logits = model(**collate(rows[start:start + batch_size])).logits
        for row, (words, count), best in zip(rows[start:], word_ids[start:], logits.argmax(-1).tolist(),
                                             strict=False):
            tags = ["O"] * count
            for position, label in enumerate(row["labels"]):
                if label != -100:
                    tags[words[position]] = labels[best[position]]
            predicted.append(tags)
    return predicted


def uncontrolled(settings: FinetuneSettings, seeds: list[int]) -> None:
    """Each side's default path, seed by seed (interleaved), then the mean and spread of dev entity F1."""
    print(f"# fine-tune conll, uncontrolled: {datetime.date.today()}, {machine()}, "
          f"transformers {transformers.__version__}, lr {settings.lr}, batch {settings.batch_size}, "
          f"{settings.epochs} epoch(s), max_seq_len {settings.max_seq_len}")
    f1: dict[str, list[float]] = {"bertkit": [], "transformers": []}
    for seed in seeds:
        run = dataclasses.replace(settings, seed=seed, out=Path(settings.out).with_name(f"out-{seed}"))
        run_finetune(dataclasses.replace(run, dev=None))  # `bertkit finetune` without --dev, then evaluate
        f1["bertkit"].append(evaluate_model(run.out, run.dev)["f1"])
        f1["transformers"].append(standard_tagging_run(run, seed)["dev"]["f1"])
        print(f"seed {seed}: dev entity F1 bertkit {100 * f1['bertkit'][-1]:.2f}  "
              f"transformers {100 * f1['transformers'][-1]:.2f}", flush=True)
    for name, values in f1.items():
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{name:<13} mean {100 * statistics.mean(values):.2f}  sd {100 * spread:.2f}  over {len(values)} seeds")


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
    parser.add_argument("--uncontrolled", action="store_true",
                        help="conll only: each side's own default path, for every --seeds value")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
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
        if args.uncontrolled:
            if args.task != "conll":
                raise SystemExit("--uncontrolled compares the tagging recipe: use it with --task conll")
            return uncontrolled(settings, args.seeds)
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
