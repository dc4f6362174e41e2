"""Fine-tuning commands: ``finetune``, ``evaluate`` and ``predict``.

The architecture (BERT, RoBERTa, DistilBERT or ALBERT) and the tokenizer come from the ``--model`` directory, so
the commands are the same for every variant.

``evaluate`` prints its metrics as one JSON object on the last line of standard output (``--output`` writes the
same object to a file); ``predict`` writes JSON lines. Both write through a temporary file and a rename.
"""

from __future__ import annotations

import argparse
import json
import logging

from bertkit.cli.common import UsageError, add_training_flags, training_values
from bertkit.tasks.families import TASKS
from bertkit.tasks.readers import GLUE_TASKS

log = logging.getLogger("bertkit")

# Data flags shared by the three commands; None keeps the model's own setting when evaluating or predicting.
COLUMN_FLAGS = ("text_column", "pair_column", "label_column")


def _add_column_flags(p: argparse.ArgumentParser, defaults: bool) -> None:
    p.add_argument("--text-column", default="text" if defaults else None, help="text column / JSON key")
    p.add_argument("--pair-column", default=None, help="second text column (pair and regress tasks)")
    p.add_argument("--label-column", default="label" if defaults else None, help="label column / JSON key")


def _add_qa_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--squad-v2", action="store_true", default=None,
                   help="QA: allow 'no answer' (SQuAD 2.0) when the null score wins")
    p.add_argument("--null-threshold", type=float, default=None,
                   help="QA with --squad-v2: answer nothing when null score - best span score exceeds this")


def _overrides(args: argparse.Namespace) -> dict:
    keys = (*COLUMN_FLAGS, "squad_v2", "null_threshold")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def cmd_finetune(args: argparse.Namespace) -> None:
    from bertkit.recipes.finetune import FinetuneSettings, run_finetune

    if args.glue is None and (args.task is None or args.train is None):
        raise UsageError("give --task and --train, or --glue NAME with --data-dir (or --train)")
    if args.glue is not None and args.train is None and args.data_dir is None:
        raise UsageError(f"--glue {args.glue} needs --data-dir (holding train.tsv and dev.tsv) or --train")
    settings = FinetuneSettings(
        model=args.model, out=args.out, task=args.task, train=args.train, dev=args.dev, glue=args.glue,
        data_dir=args.data_dir, text_column=args.text_column, pair_column=args.pair_column,
        label_column=args.label_column, epochs=args.epochs, max_seq_len=args.max_seq_len, dropout=args.dropout,
        patience=args.patience, doc_stride=args.doc_stride, max_query_len=args.max_query_len,
        squad_v2=bool(args.squad_v2), null_threshold=args.null_threshold or 0.0, overwrite=args.overwrite,
        **training_values(args),
    )
    summary = run_finetune(settings)
    print(json.dumps(summary))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from bertkit.recipes.finetune import evaluate_model, write_json

    if args.data is None and (args.glue is None or args.data_dir is None):
        raise UsageError("give --data FILE, or --glue NAME with --data-dir DIR (evaluates its dev.tsv)")
    result = evaluate_model(args.model, args.data, glue=args.glue, data_dir=args.data_dir,
                            batch_size=args.batch_size, **_overrides(args))
    if args.output:
        write_json(args.output, result)
    print(json.dumps(result))


def cmd_predict(args: argparse.Namespace) -> None:
    from bertkit.recipes.finetune import predict

    count = predict(args.model, args.input, args.output, batch_size=args.batch_size, **_overrides(args))
    print(f"wrote {args.output}: {count} predictions")


def add_commands(sub: argparse._SubParsersAction) -> None:
    from bertkit.recipes.finetune import FinetuneSettings

    glue_names = sorted(GLUE_TASKS)
    p = sub.add_parser("finetune", help="fine-tune a pretrained model on a classification, tagging or QA task")
    p.add_argument("--task", choices=TASKS, help="task family (implied by --glue)")
    p.add_argument("--model", required=True,
                   help="pretrained checkpoint directory (config.json, weights, tokenizer files); any variant")
    p.add_argument("--train", help="training data: CSV / TSV / JSONL, CoNLL, or SQuAD JSON")
    p.add_argument("--dev", help="dev data; the best model by the dev metric is kept")
    p.add_argument("--out", required=True, help="output directory (new or empty, unless --resume / --overwrite)")
    p.add_argument("--glue", choices=glue_names, help="GLUE task: its columns, labels and metric")
    p.add_argument("--data-dir", help="with --glue: the folder holding train.tsv and dev.tsv")
    _add_column_flags(p, defaults=True)
    p.add_argument("--epochs", type=int, default=3)
    add_training_flags(p, FinetuneSettings, help={
        "max_steps": "optimizer steps (overrides --epochs)",
        "lr": "peak learning rate (default 3e-5; 5e-5 for qa)",
        "eval_every": "evaluate on --dev every N steps (default: each epoch)",
        "save_every": "checkpoint every N steps (default: at each evaluation; 0: none)",
        "log_every": "log the training loss every N steps (default 50, or each epoch if shorter)",
        "resume": "continue an interrupted run of the same task in --out",
    })
    p.add_argument("--max-seq-len", type=int, help="tokens per sequence (default 128; 384 for qa)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--patience", type=int, help="stop after N evaluations without a better dev metric")
    p.add_argument("--doc-stride", type=int, default=128, help="qa: tokens between passage windows")
    p.add_argument("--max-query-len", type=int, default=64, help="qa: question tokens kept")
    _add_qa_flags(p)
    p.add_argument("--overwrite", action="store_true", help="delete a previous run of the same task in --out")
    p.set_defaults(handler=cmd_finetune)

    p = sub.add_parser("evaluate", help="score a fine-tuned model on labelled data; prints one JSON object")
    p.add_argument("--model", required=True, help="fine-tuned model directory")
    p.add_argument("--data", help="labelled data file")
    p.add_argument("--glue", choices=glue_names, help="GLUE task of the data")
    p.add_argument("--data-dir", help="with --glue and no --data: evaluate DIR/dev.tsv")
    p.add_argument("--output", help="also write the metrics to this JSON file")
    p.add_argument("--batch-size", type=int, default=64)
    _add_column_flags(p, defaults=False)
    _add_qa_flags(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("predict", help="predict with a fine-tuned model; writes JSON lines")
    p.add_argument("--model", required=True, help="fine-tuned model directory")
    p.add_argument("--input", required=True, help="unlabelled data (as for --train; QA also takes JSONL)")
    p.add_argument("--output", required=True, help="JSONL file to write")
    p.add_argument("--batch-size", type=int, default=64)
    _add_column_flags(p, defaults=False)
    _add_qa_flags(p)
    p.set_defaults(handler=cmd_predict)
