"""Commands to look inside: ``explain`` (one sentence through a checkpoint) and ``report`` (a training run)."""

from __future__ import annotations

import argparse
import sys

from bertkit.cli.common import UsageError


def cmd_explain(args: argparse.Namespace) -> None:
    from bertkit.inspect.explain import explain, format_table, write_page

    result = explain(args.model, args.text, args.pair, top_k=args.top_k)
    print(format_table(result))
    if result.truncated:
        print(f"bertkit explain: warning: {result.truncation_note()}", file=sys.stderr)
    print(f"\nwrote {write_page(result, args.out)}")


def cmd_report(args: argparse.Namespace) -> None:
    from bertkit.inspect.report import build_report

    try:
        path = build_report(args.run_dir)
    except ImportError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {path}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="sub-word split, ids and an HTML page of attention maps for a sentence")
    p.add_argument("text", help="the sentence")
    p.add_argument("pair", nargs="?", help="an optional second sentence (segment B)")
    p.add_argument("--model", required=True, help="checkpoint directory (with its tokenizer files)")
    p.add_argument("--out", default="explain.html", help="HTML page to write (default: explain.html)")
    p.add_argument("--top-k", type=int, default=5, help="fill-mask candidates per position")
    p.set_defaults(handler=cmd_explain)

    p = sub.add_parser("report", help="write report.html and PNG plots for a training run folder")
    p.add_argument("run_dir", help="the run's output folder (holding metrics.jsonl)")
    p.set_defaults(handler=cmd_report)
