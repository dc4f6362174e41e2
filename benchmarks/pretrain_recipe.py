"""Pretraining recipe study: which settings give the highest held-out masked-LM accuracy for the same compute?

Every run starts from a base recipe and changes one factor (``--vary``), or every combination of the factors
(``--grid``); each trains for the same number of steps (``--steps``, comparable on a busy machine) or the same
training time (``--minutes``, through ``--max-minutes``), then is scored by one function, :func:`score`:
masked-LM accuracy and loss on held-out text that no run trained on, masked once with a fixed seed at 15%
(token level), whatever the run's own masking, sequence length or objective.

Factors (``--base`` / ``--vary`` keys): ``preset`` (tiny / mini / small), ``lr``, ``batch_size``, ``seq_len``,
``warmup`` (share of the run), ``dropout`` (0 = off), ``objective`` (``nsp``: BERT pairs with next-sentence
prediction; ``none``: packed full sentences, masked-LM only), ``mlm_prob``, ``whole_word`` (0 / 1) and
``vocab_size``. Text: the shared corpus's ``gutenberg_set_a`` books with the last ``--heldout-books`` held out,
or (``--python-docs``) the demo's built-in text, Python's bundled documentation, with its last documents held out.

    python benchmarks/pretrain_recipe.py --python-docs --steps 300 --vary lr=5e-4,2e-3 --vary dropout=0.1
    python benchmarks/pretrain_recipe.py --minutes 5 --base preset=mini --vary objective=nsp

Prints one Markdown row per run (and appends it to ``WORK/results.md``): the figures, steps, tokens seen and
training seconds, with the machine's load, since timings on a shared machine are not quiet-machine figures.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
from pathlib import Path
from typing import Any

import torch

from bertkit.data.prepare import prepare
from bertkit.data.pretraining import PretrainingBatches
from bertkit.data.shards import ShardSet
from bertkit.demo import python_docs_corpus, write_corpus
from bertkit.model import BertForPreTraining
from bertkit.recipes.pretrain import (
    EVAL_MASK_SEED,
    EVAL_MLM_PROB,
    PretrainingEvaluator,
    PretrainSettings,
    run_pretraining,
)
from bertkit.tokenizer import Tokenizer
from common import SHARED_DATA, machine

BASE = dict(preset="mini", lr=1e-3, batch_size=64, seq_len=128, warmup=0.05, dropout=0.0, objective="none",
            mlm_prob=0.15, whole_word=0, vocab_size=8000)
KINDS = {"preset": str, "objective": str, "lr": float, "warmup": float, "dropout": float, "mlm_prob": float,
         "batch_size": int, "seq_len": int, "whole_word": int, "vocab_size": int}
EVAL_SEQ_LEN = 128


def parse_pairs(text: str) -> dict[str, Any]:
    """``key=value,key=value`` -> typed recipe values."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in KINDS:
            raise SystemExit(f"unknown factor {key!r}; choose from {', '.join(KINDS)}")
        out[key] = KINDS[key](value)
    return out


def recipes(base: dict[str, Any], vary: list[str], grid: bool) -> list[dict[str, Any]]:
    """The base recipe and each single change of it, or (grid) every combination of the varied values."""
    factors = {}
    for spec in vary:
        key, _, values = spec.partition("=")
        factors[key] = [parse_pairs(f"{key}={v}")[key] for v in values.split(",")]
    if grid:
        keys = list(factors)
        return [{**base, **dict(zip(keys, combo, strict=True))}
                for combo in itertools.product(*(factors[k] for k in keys))]
    runs = [dict(base)]
    runs += [{**base, key: v} for key, values in factors.items() for v in values if v != base[key]]
    return runs


# ------------------------------------------------------------------------------------------------- data
def split_text(work: Path, python_docs: bool, heldout_books: int) -> tuple[list[str], list[str]]:
    """(training files, held-out files)."""
    if python_docs:
        documents = python_docs_corpus()
        cut = max(1, len(documents) // 20)
        return ([str(write_corpus(documents[:-cut], work / "train.txt"))],
                [str(write_corpus(documents[-cut:], work / "heldout.txt"))])
    books = sorted(str(p) for p in (SHARED_DATA / "corpus" / "gutenberg_set_a").glob("*.txt"))
    if len(books) <= heldout_books:
        raise SystemExit(f"{SHARED_DATA / 'corpus'}: need more than {heldout_books} gutenberg_set_a books")
    return books[:-heldout_books], books[-heldout_books:]


def data_for(work: Path, recipe: dict[str, Any], train: list[str], heldout: list[str]) -> tuple[str, str, str]:
    """(tokenizer, training shards, held-out shards) for the recipe's vocabulary, length and objective; cached."""
    vocab = work / f"vocab{recipe['vocab_size']}"
    if not (vocab / "vocab.txt").is_file():
        Tokenizer.train(train, vocab_size=recipe["vocab_size"]).save_pretrained(vocab)
    arch = "bert" if recipe["objective"] == "nsp" else "roberta"  # roberta: packed full sentences
    shards = work / f"train_v{recipe['vocab_size']}_{recipe['objective']}_{recipe['seq_len']}"
    if not shards.is_dir():
        prepare(train, str(vocab), str(shards), max_seq_len=recipe["seq_len"], arch=arch, seed=0)
    held = work / f"heldout_v{recipe['vocab_size']}"
    if not held.is_dir():
        prepare(heldout, str(vocab), str(held), max_seq_len=EVAL_SEQ_LEN, arch="roberta", seed=0)
    return str(vocab), str(shards), str(held)


# -------------------------------------------------------------------------------------------- run, score
def score(model_dir: str, heldout_shards: str, max_instances: int = 1000) -> dict[str, float]:
    """Held-out masked-LM accuracy and loss: the first ``max_instances`` held-out sequences, fixed 15% masking."""
    shards = ShardSet(heldout_shards)
    indices = torch.arange(min(max_instances, len(shards))).numpy()
    source = PretrainingBatches(shards, 64, EVAL_MASK_SEED, mlm_prob=EVAL_MLM_PROB, drop_last=False,
                                indices=indices, sentence_labels=False)
    model = BertForPreTraining.from_pretrained(model_dir).eval()
    with torch.no_grad():
        metrics = PretrainingEvaluator(source)(model)
    return {"accuracy": metrics["mlm_accuracy"], "loss": metrics["mlm_loss"]}


def train_and_score(work: Path, recipe: dict[str, Any], args: argparse.Namespace, name: str) -> dict[str, Any]:
    tokenizer, shards, held = data_for(work, recipe, *args.text)
    out = work / "runs" / name
    settings = PretrainSettings(
        data=shards, out_dir=str(out), tokenizer=tokenizer, arch="bert", preset=recipe["preset"],
        max_steps=args.steps, max_minutes=args.minutes, batch_size=recipe["batch_size"], lr=recipe["lr"],
        warmup_ratio=recipe["warmup"], dropout=recipe["dropout"], mlm_prob=recipe["mlm_prob"],
        whole_word=bool(recipe["whole_word"]), sentence_task=recipe["objective"] == "nsp", eval_holdout=0,
        save_every=0, log_every=25, progress=False, plots=False, seed=args.seed,
    )  # fmt: skip
    summary = run_pretraining(settings)
    data = ShardSet(shards).manifest["counts"]
    tokens = summary["step"] * recipe["batch_size"] * data["tokens"] / data["instances"]
    return {**score(str(out), held), "steps": summary["step"], "tokens": tokens,
            "train_seconds": summary["train_seconds"]}


def row(recipe: dict[str, Any], result: dict[str, Any], load: float) -> str:
    cells = [recipe[k] for k in BASE] + [f"{result['accuracy']:.3f}", f"{result['loss']:.3f}", result["steps"],
                                         f"{result['tokens'] / 1e6:.2f}M", f"{result['train_seconds']:.0f}",
                                         f"{load:.1f}"]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="optimizer steps per run (comparable on a busy machine)")
    length.add_argument("--minutes", type=float, help="training-time budget per run (--max-minutes)")
    parser.add_argument("--base", default="", help="changes to the base recipe, e.g. preset=tiny,lr=5e-4")
    parser.add_argument("--vary", action="append", default=[], help="factor=v1,v2 (repeat for more factors)")
    parser.add_argument("--grid", action="store_true", help="every combination of the --vary values")
    parser.add_argument("--python-docs", action="store_true", help="the demo's built-in text instead of the books")
    parser.add_argument("--heldout-books", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/pretrain_recipe"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    args.text = split_text(args.work, args.python_docs, args.heldout_books)
    todo = recipes({**BASE, **parse_pairs(args.base)}, args.vary, args.grid)
    header = "| " + " | ".join([*BASE, "held-out acc", "held-out loss", "steps", "tokens", "train s", "load"]) + " |"
    print(f"# {datetime.date.today()} {machine()}; {len(todo)} run(s)\n{header}", flush=True)
    with (args.work / "results.md").open("a", encoding="utf-8") as log:
        log.write(f"\n# {datetime.datetime.now():%Y-%m-%d %H:%M} {machine()}\n{header}\n")
        for recipe in todo:
            name = "-".join(f"{k}{v}" for k, v in recipe.items()) + f"-{args.steps or args.minutes}"
            done = args.work / "runs" / name / "score.json"  # a finished run is scored once, then reused
            if done.is_file():
                result = json.loads(done.read_text(encoding="utf-8"))
            else:
                result = train_and_score(args.work, recipe, args, name)
                done.write_text(json.dumps({**result, "load": os.getloadavg()[0]}, indent=2) + "\n",
                                encoding="utf-8")
                result["load"] = os.getloadavg()[0]
            line = row(recipe, result, result["load"])
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()


if __name__ == "__main__":
    main()
