"""Distillation: what distilling adds to a half-depth DistilBERT student, beyond its start and beyond MLM alone.

The whole recipe runs through the `bertkit` command line, in this process, and each command is printed as it ran:

1. ``bertkit tokenizer train``: a WordPiece vocabulary from the UTF-8 books of the shared corpus (gutenberg_set_a);
2. ``bertkit prepare``: shards of the whole shared corpus (BERT pairs, length 64 by default);
3. ``bertkit pretrain``: the teacher, a mini BERT (4 layers, hidden 256), masked-LM + NSP;
4. ``bertkit distill``: a DistilBERT student with half the teacher's layers (0 and 2), started from the teacher;
5. the control: the same command with the teacher's two terms weighted 0 (``--alpha-ce 0 --alpha-cos 0``), so the
   same student cut trains the same steps on the same batches with the masked-LM loss alone.

Three student figures come out: the cut before any step, after distillation, after MLM alone; distillation shows
only where the second beats both of the others. A teacher at the unigram level (predicting the most frequent
tokens) cannot show it, so the report also prints that level for the held-out text and the teacher's margin over
it.

Both runs hold out the same tail of the shard set (the end of the corpus) and score it with the same fixed masking,
so neither model trains on the evaluation text. The distillation run measures the teacher and the student on those
same batches; student accuracy / teacher accuracy is printed as well. With ``--teacher DIR`` the
first and third steps are skipped and the shards are prepared with that teacher's tokenizer (its training text
should then not include the end of the shared corpus).

    python benchmarks/distill.py                          # 20-30 minutes on 2 cores
    python benchmarks/distill.py --teacher runs/bert      # an existing teacher
    python benchmarks/distill.py --quick                  # a minute or two: proves the pipeline, not the figure
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from bertkit.cli import main as bertkit
from bertkit.data.shards import ShardSet
from bertkit.recipes.pretrain import PretrainSettings, make_sources
from bertkit.train.distributed import DistInfo
from common import SHARED_DATA, machine

# Full run: sized for 15-23 minutes on 2 CPU cores. Measured at batch 32 x 64 (about 1,700 real tokens), one
# thread: 0.75 s of CPU per teacher step (mini, vocabulary 8,000) and 0.70 s per distillation step (teacher
# forward + half-depth student forward and backward); tokenizer, prepare, evaluations and reports about 200 s.
FULL = dict(vocab_size=8000, teacher_steps=1000, student_steps=600, batch_size=32, eval_holdout=1000, files=None)
QUICK = dict(vocab_size=2000, teacher_steps=30, student_steps=20, batch_size=16, eval_holdout=128, files=3)


def run(stage: str, argv: list[str], timings: dict[str, float], commands: dict[str, str]) -> None:
    """One `bertkit` command, timed; a failure stops the benchmark with the command's own message."""
    commands[stage] = "bertkit " + shlex.join(argv)
    print(f"\n$ {commands[stage]}", flush=True)
    start = time.perf_counter()
    status = bertkit(argv)
    timings[stage] = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{stage} failed (exit status {status}): {commands[stage]}")


def corpus_inputs(corpus: Path, files: int | None) -> tuple[list[str], list[str]]:
    """(tokenizer training inputs, prepare inputs): all of the corpus, or its first ``files`` books for --quick."""
    books = sorted((corpus / "gutenberg_set_a").glob("*.txt"))
    if not books:
        raise SystemExit(f"{corpus}: no gutenberg_set_a/*.txt; the benchmark needs the shared corpus")
    if files is not None:
        chosen = [str(p) for p in books[:files]]
        return chosen, chosen
    return [str(corpus / "gutenberg_set_a")], [str(corpus)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=SHARED_DATA / "corpus")
    parser.add_argument("--work", type=Path, help="folder for the tokenizer, shards and both runs (default: a new "
                                                   "temporary folder); must be new or empty")
    parser.add_argument("--teacher", type=Path, help="an existing teacher (checkpoint with an MLM head + tokenizer)")
    parser.add_argument("--shards", type=Path, help="an existing shard set (from `bertkit prepare`, holding its "
                        "tokenizer) to train on instead of preparing the corpus again")
    parser.add_argument("--teacher-preset", default="mini")
    parser.add_argument("--max-seq-len", type=int, default=64)
    parser.add_argument("--teacher-steps", type=int)
    parser.add_argument("--student-steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--teacher-lr", type=float, default=4e-4)  # at 1e-3 the teacher stalls at unigram level
    parser.add_argument("--student-lr", type=float, default=5e-4)
    parser.add_argument("--eval-holdout", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a tiny run that proves the pipeline, not the figure")
    args = parser.parse_args()
    size = {**(QUICK if args.quick else FULL),
            **{k: getattr(args, k) for k in ("teacher_steps", "student_steps", "batch_size", "eval_holdout")
               if getattr(args, k) is not None}}
    work = args.work or Path(tempfile.mkdtemp(prefix="bertkit-distill-"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work} is not empty; choose a new --work folder")
    torch.set_num_threads(args.threads)
    started = datetime.datetime.now()
    print(f"# distillation benchmark, {started:%Y-%m-%d %H:%M}, {machine()}, work folder {work}")

    timings: dict[str, float] = {}
    commands: dict[str, str] = {}
    tok_inputs, corpus = corpus_inputs(args.corpus, size["files"])
    teacher = args.teacher or work / "teacher"
    shards = args.shards or work / "shards"
    if args.teacher is None and args.shards is None:
        run("tokenizer", ["tokenizer", "train", *tok_inputs, "--vocab-size", str(size["vocab_size"]),
                          "--out", str(work / "tok")], timings, commands)
    tokenizer = work / "tok" if args.teacher is None else teacher
    if args.shards is None:
        run("prepare", ["prepare", *corpus, "--tokenizer", str(tokenizer), "--out", str(shards),
                        "--max-seq-len", str(args.max_seq_len), "--workers", str(args.threads)], timings, commands)
    common = ["--batch-size", str(size["batch_size"]), "--eval-holdout", str(size["eval_holdout"]),
              "--log-every", "50", "--save-every", "0", "--no-progress"]
    if args.teacher is None:
        run("teacher", ["pretrain", "--data", str(shards), "--out", str(teacher), "--preset",
                        args.teacher_preset, "--max-steps", str(size["teacher_steps"]), "--lr", str(args.teacher_lr),
                        "--warmup-ratio", "0.05", "--eval-every", "0", *common], timings, commands)
    preset = ["--student-preset", args.teacher_preset] if args.teacher is None else []
    for stage, extra in (("student", []), ("mlm_only", ["--alpha-ce", "0", "--alpha-cos", "0"])):
        run(stage, ["distill", "--teacher", str(teacher), *preset, "--shards", str(shards), "--out",
                    str(work / stage), "--max-steps", str(size["student_steps"]), "--lr", str(args.student_lr),
                    "--eval-every", str(max(1, size["student_steps"] // 2)), *extra, *common], timings, commands)
    report(work, teacher, args.teacher is None, timings, commands, started)
    print(f"unigram level of the held-out text: {unigram_level(shards, size['eval_holdout']):.4f} (always "
          "answering its most frequent masked token; a teacher must be well above it to show distillation)")


def unigram_level(shards: Path, eval_holdout: int) -> float:
    """The held-out MLM accuracy of always predicting the most frequent masked token of those same batches."""
    settings = PretrainSettings(data=str(shards), out_dir="unused", eval_holdout=eval_holdout)
    _, evaluation = make_sources(settings, ShardSet(str(shards)), None, DistInfo.single("cpu"))
    counts: Counter[int] = Counter()
    for index in range(evaluation.num_batches(0)):
        labels = evaluation.batch(0, index)["mlm_labels"]
        counts.update(labels[labels != -100].tolist())
    return max(counts.values()) / sum(counts.values())


def report(work: Path, teacher: Path, pretrained_here: bool, timings: dict[str, float], commands: dict[str, str],
           started: datetime.datetime) -> None:
    info = json.loads((work / "student" / "distill.json").read_text(encoding="utf-8"))
    summary, initial = info["summary"], info["initial_eval"]
    alone = json.loads((work / "mlm_only" / "distill.json").read_text(encoding="utf-8"))["summary"]
    t_info, s_info = info["teacher"], info["student"]
    print(f"\n# distillation benchmark, {started:%Y-%m-%d}, {machine()}")
    print(f"held-out text: the last {info['data']['eval_instances']} of {info['data']['instances']} instances "
          "(the end of the corpus), fixed masking; neither model trained on it")
    print(f"{'stage':<10} {'wall s':>8}  command")
    for stage, seconds in timings.items():
        print(f"{stage:<10} {seconds:8.1f}  {commands[stage]}")
    print(f"{'total':<10} {sum(timings.values()):8.1f}")
    teacher_accuracy = summary["eval_teacher_mlm_accuracy"]
    print("\n| model | layers | parameters | held-out MLM accuracy |\n|---|---:|---:|---:|")
    print(f"| teacher: {t_info['model_type']} ({teacher}) | {t_info['layers']} | {t_info['parameters']:,} | "
          f"{teacher_accuracy:.4f} |")
    print(f"| student: {s_info['model_type']}, from teacher layers {s_info['from_teacher_layers']}, before "
          f"distillation | {s_info['layers']} | {s_info['parameters']:,} | {initial['mlm_accuracy']:.4f} |")
    print(f"| student after {summary['step']} distillation steps | {s_info['layers']} | {s_info['parameters']:,} | "
          f"{summary['eval_mlm_accuracy']:.4f} |")
    print(f"| the same cut after {alone['step']} steps of MLM alone (no teacher terms) | {s_info['layers']} | "
          f"{s_info['parameters']:,} | {alone['eval_mlm_accuracy']:.4f} |")
    gain = summary["eval_mlm_accuracy"] - max(initial["mlm_accuracy"], alone["eval_mlm_accuracy"])
    print(f"distillation over the better of (cut, MLM alone): {gain:+.4f}")
    if pretrained_here:
        own = json.loads((teacher / "pretrain.json").read_text(encoding="utf-8"))["summary"]["eval_mlm_accuracy"]
        print(f"(the teacher's own pretraining evaluation of the same held-out batches: {own:.4f})")
    ratio = summary["eval_accuracy_retained"]
    print(f"\nstudent / teacher MLM accuracy: {ratio:.3f} ({100 * ratio:.1f}%; target >= 90%: "
          f"{'met' if ratio >= 0.9 else 'NOT met'}); top-1 agreement {summary['eval_agreement']:.3f}; "
          f"student has {s_info['parameters'] / t_info['parameters']:.2f}x the teacher's parameters")


if __name__ == "__main__":
    main()
