"""Pretraining commands: ``prepare`` (corpus -> shards), ``pretrain`` (shards -> model) and ``demo`` (both, offline).

``--arch bert|roberta|distilbert|albert`` picks the family member: ``prepare`` writes the arch's objective (NSP
pairs, SOP pairs, or packed full sentences) and ``pretrain`` builds that model (or reads the arch from
``--init-from`` / ``--config`` / the shards).

``pretrain`` runs unchanged under ``torchrun --nproc_per_node N -m bertkit pretrain ...``: each process joins the
job, trains on its share of the shards, and only rank 0 writes and prints.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bertkit.cli.common import UsageError, add_training_flags, run_distributed, training_values


def cmd_prepare(args: argparse.Namespace) -> None:
    from bertkit.data.prepare import prepare

    manifest = prepare(args.corpus, args.tokenizer, args.out, max_seq_len=args.max_seq_len, workers=args.workers,
                       seed=args.seed, dupe_factor=args.dupe_factor, short_seq_prob=args.short_seq_prob,
                       text_field=args.text_field, arch=args.arch, strict=args.strict)
    counts = manifest["counts"]
    labelled = {"not_next": "NotNext", "swapped": "swapped"}
    kind = next((f"{counts[k]} {name}" for k, name in labelled.items() if k in counts), "packed full sentences")
    print(f"wrote {args.out} ({manifest['objective']} objective): {len(manifest['shards'])} shard(s), "
          f"{counts['instances']} instances ({kind}), {counts['tokens']} tokens from {counts['documents']} "
          f"documents in {counts['files']} file(s)" + (f"; skipped {counts['skipped_files']} file(s) that are "
                                                        "not UTF-8 text" if counts["skipped_files"] else ""))


def _settings(args: argparse.Namespace):
    from bertkit.recipes.pretrain import PretrainSettings

    if args.init_from and (args.preset or args.config):
        raise UsageError("--init-from brings its own config; drop --preset / --config")
    if (args.phase2_data is None) != (args.phase2_steps is None):
        raise UsageError("--phase2-data and --phase2-steps go together")
    return PretrainSettings(
        data=args.data, out_dir=args.out, arch=args.arch, preset=args.preset or "base", config_file=args.config,
        init_from=args.init_from, tokenizer=args.tokenizer, max_minutes=args.max_minutes, whole_word=args.whole_word,
        mlm_prob=args.mlm_prob, dropout=args.dropout, sentence_task=args.sentence_task,
        eval_holdout=args.eval_holdout, phase2_data=args.phase2_data, phase2_steps=args.phase2_steps or 0,
        plots=not args.no_plots, **training_values(args),
    )  # fmt: skip


def _minutes(text: str) -> float:
    """``--max-minutes``: a finite number above zero (argparse turns the error into a one-line usage message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the budget must be more than 0 minutes")
    return value


def cmd_pretrain(args: argparse.Namespace) -> None:
    from bertkit.recipes.pretrain import run_pretraining

    summary, is_main = run_distributed(run_pretraining, _settings(args))
    if is_main:
        _print_summary(summary, Path(args.out))


def _print_summary(summary: dict, out: Path) -> None:
    initial = summary.get("initial_eval") or {}
    print(f"trained {summary['step']} steps in {summary['elapsed']:.0f} s ({summary['train_seconds']:.0f} s of "
          f"training); final training loss {summary['loss']:.4f}")
    if summary.get("fresh_parameters"):
        print(f"initialised fresh: {', '.join(summary['fresh_parameters'])}")
    for key in ("mlm_loss", "mlm_accuracy", "perplexity", "nsp_accuracy", "sop_accuracy"):
        if f"eval_{key}" in summary:
            start = f"{initial[key]:.4f} -> " if key in initial else ""
            print(f"  held-out {key:<13} {start}{summary[f'eval_{key}']:.4f}")
    print(f"model:   {out}/ (config.json, model.safetensors and the tokenizer's files)")
    print(f"metrics: {out / 'metrics.jsonl'}")
    if summary.get("report"):
        print(f"report:  {summary['report']} (loss, learning rate, evaluation and tokens/s plots)")


def cmd_demo(args: argparse.Namespace) -> None:
    from bertkit.demo import DemoSettings, run_demo

    given = {k: getattr(args, k) for k in ("out_dir", "corpus", "preset", "steps", "vocab_size", "max_corpus_chars",
                                           "batch_size", "max_seq_len") if getattr(args, k) is not None}
    run_demo(DemoSettings(**given))


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    from bertkit.data.pretraining import ARCH_OBJECTIVES

    p = sub.add_parser("prepare", help="turn text files into pretraining shards (NSP / SOP pairs or full sentences)")
    p.add_argument("corpus", nargs="+", help="files, folders or globs of .txt (blank-line separated documents) "
                                             "or .jsonl")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder (copied into the shard set)")
    p.add_argument("--out", required=True, help="shard set folder to write")
    p.add_argument("--arch", choices=list(ARCH_OBJECTIVES), default="bert",
                   help="decides the objective: bert NSP pairs, albert sentence-order pairs, roberta / distilbert "
                        "full sentences packed across documents (default bert)")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--workers", type=int, default=1, help="processes; the output does not depend on it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dupe-factor", type=int, default=1, help="passes over the corpus, each split differently")
    p.add_argument("--short-seq-prob", type=float, default=0.1)
    p.add_argument("--text-field", default="text", help="JSON field holding the text in .jsonl files")
    p.add_argument("--strict", action="store_true", help="refuse a file that is not UTF-8 text (default: skip it "
                                                         "with a warning)")
    p.set_defaults(handler=cmd_prepare)


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    from bertkit.config import PRESETS
    from bertkit.data.pretraining import ARCH_OBJECTIVES
    from bertkit.recipes.pretrain import BUDGET_RECIPE, PAPER_RECIPE, PretrainSettings

    def defaults(name: str) -> str:
        return f"default {PAPER_RECIPE[name]}; with --max-minutes {BUDGET_RECIPE[name]}"

    p = sub.add_parser("pretrain", help="pretrain a BERT-family model (masked LM + its sentence task) on a shard set")
    p.add_argument("--data", required=True, help="shard set written by `bertkit prepare`")
    p.add_argument("--out", required=True, help="run folder: model, metrics.jsonl, report, checkpoints")
    p.add_argument("--arch", choices=list(ARCH_OBJECTIVES),
                   help="architecture (default: --init-from's or --config's model_type, else the shards' arch)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--preset", choices=list(PRESETS), help="model size for a fresh model (default: base)")
    model.add_argument("--config", help="config.json for a fresh model (vocab_size and pad_token_id follow the "
                                        "shards)")
    p.add_argument("--init-from", help="checkpoint folder to continue pretraining from")
    p.add_argument("--tokenizer", help="tokenizer folder (default: --init-from, else the shard set)")
    p.add_argument("--max-minutes", type=_minutes,
                   help="budget of training time (evaluation not counted): the schedule follows the budget, and "
                        "unset options take the studied budget recipe (see README)")
    add_training_flags(p, PretrainSettings, help={
        "max_steps": "optimizer steps, both phases together (default 10000; with --max-minutes: no limit)",
        "batch_size": f"sequences per micro-batch per process ({defaults('batch_size')})",
        "lr": f"peak learning rate ({defaults('lr')})",
        "warmup_ratio": f"warm-up share of the run ({defaults('warmup_ratio')})",
    })
    p.add_argument("--whole-word-mask", "--whole-word", dest="whole_word", action="store_true", default=None,
                   help=f"mask whole words, all pieces of a word together ({defaults('whole_word')})")
    p.add_argument("--mlm-prob", type=float, help=f"share of tokens masked ({defaults('mlm_prob')})")
    p.add_argument("--dropout", type=float, help=f"dropout while pretraining ({defaults('dropout')}; None: the "
                                                 "config's); the saved config keeps its own rates")
    p.add_argument("--sentence-task", action=argparse.BooleanOptionalAction,
                   help=f"train the shards' sentence task (NSP / SOP) besides masked-LM ({defaults('sentence_task')})")
    p.add_argument("--eval-holdout", type=int, help="held-out instances (default 5%%, at most 1000; 0: none)")
    p.add_argument("--phase2-data", help="shard set for the last --phase2-steps steps (e.g. length 512)")
    p.add_argument("--phase2-steps", type=int)
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(handler=cmd_pretrain)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from bertkit.config import PRESETS

    p = sub.add_parser("demo", help="offline end-to-end demo: vocabulary, shards and a small BERT on Python's docs")
    p.add_argument("--out", dest="out_dir", metavar="OUT",
                   help="demo folder (default runs/demo; only a previous demo is replaced)")
    p.add_argument("--corpus", nargs="+", help="your own text files instead of Python's documentation")
    p.add_argument("--preset", choices=list(PRESETS), help="model size (default mini)")
    # Knobs for quick checks, kept out of the help; unset ones take DemoSettings' defaults.
    for flag in ("--steps", "--vocab-size", "--max-corpus-chars", "--batch-size", "--max-seq-len"):
        p.add_argument(flag, type=int, help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_demo)


def add_commands(sub: argparse._SubParsersAction) -> None:
    _add_prepare(sub)
    _add_pretrain(sub)
    _add_demo(sub)
