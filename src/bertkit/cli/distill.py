"""``bertkit distill``: a pretrained teacher -> a DistilBERT student at half its depth (see ``train.distill``).

Flags that mean the same as ``bertkit pretrain``'s have the same names; like it, the command runs unchanged under
``torchrun --nproc_per_node N -m bertkit distill ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bertkit.cli.common import add_training_flags, run_distributed, training_values


def _settings(args: argparse.Namespace):
    from bertkit.recipes.distill import DistillSettings

    return DistillSettings(
        teacher=args.teacher, shards=args.shards, out_dir=args.out, student_preset=args.student_preset,
        arch=args.arch, student_layers=args.student_layers, tokenizer=args.tokenizer, temperature=args.temperature,
        alpha_ce=args.alpha_ce, alpha_mlm=args.alpha_mlm, alpha_cos=args.alpha_cos, whole_word=args.whole_word,
        mlm_prob=args.mlm_prob, eval_holdout=args.eval_holdout, plots=not args.no_plots, **training_values(args),
    )  # fmt: skip


def cmd_distill(args: argparse.Namespace) -> None:
    from bertkit.recipes.distill import run_distillation

    summary, is_main = run_distributed(run_distillation, _settings(args))
    if is_main:
        _print_summary(summary, Path(args.out))


def _print_summary(summary: dict, out: Path) -> None:
    teacher, student = summary["teacher"] or {}, summary["student"] or {}
    if teacher and student:
        print(f"teacher: {teacher['layers']} layers, {teacher['parameters']:,} parameters ({teacher['path']})")
        print(f"student: {student['model_type']}, {student['layers']} layers from the teacher's "
              f"{student['from_teacher_layers']}, {student['parameters']:,} parameters")
    print(f"trained {summary['step']} steps in {summary['elapsed']:.0f} s; final training loss {summary['loss']:.4f}")
    if "eval_mlm_accuracy" in summary:
        initial = summary.get("initial_eval") or {}
        start = f"{initial['mlm_accuracy']:.4f} -> " if "mlm_accuracy" in initial else ""
        print(f"  held-out MLM accuracy: teacher {summary['eval_teacher_mlm_accuracy']:.4f}, "
              f"student {start}{summary['eval_mlm_accuracy']:.4f}")
        print(f"  student keeps {100 * summary['eval_accuracy_retained']:.1f}% of the teacher's accuracy "
              f"(top-1 agreement {100 * summary['eval_agreement']:.1f}%)")
    print(f"student: {out}/ (config.json, model.safetensors, tokenizer)")
    print(f"metrics: {out / 'metrics.jsonl'}")
    if summary.get("report"):
        print(f"report:  {summary['report']}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from bertkit.config import PRESETS
    from bertkit.recipes.distill import ARCHS, DistillSettings

    p = sub.add_parser("distill", help="distil a pretrained teacher into a shallower student (DistilBERT)")
    p.add_argument("--teacher", required=True, help="checkpoint folder with an MLM head, e.g. a pretrain run")
    p.add_argument("--student-preset", choices=list(PRESETS),
                   help="the student's size, checked against the teacher's width (default: the teacher's)")
    p.add_argument("--shards", "--data", dest="shards", required=True, help="shard set written by `bertkit prepare`")
    p.add_argument("--out", required=True, help="run folder: student model, metrics.jsonl, report, checkpoints")
    p.add_argument("--arch", choices=list(ARCHS), default="distilbert", help="student architecture")
    p.add_argument("--student-layers", type=int, help="student depth (default: half the teacher's)")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the teacher's, else the shard set's)")
    add_training_flags(p, DistillSettings, aliases={"max_steps": ("--steps",)})
    p.add_argument("--temperature", type=float, default=2.0, help="softmax temperature of the soft targets")
    p.add_argument("--alpha-ce", type=float, default=5.0, help="weight of the soft-target (KL) loss")
    p.add_argument("--alpha-mlm", type=float, default=2.0, help="weight of the masked-LM loss")
    p.add_argument("--alpha-cos", type=float, default=1.0, help="weight of the hidden-state cosine loss")
    p.add_argument("--whole-word-mask", "--whole-word", dest="whole_word", action="store_true",
                   help="mask whole words, all pieces of a word together")
    p.add_argument("--mlm-prob", type=float, default=0.15, help="share of tokens masked (default 0.15)")
    p.add_argument("--eval-holdout", type=int, help="held-out instances (default 5%%, at most 1000; 0: none)")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(handler=cmd_distill)
