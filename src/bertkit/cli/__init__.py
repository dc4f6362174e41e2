"""The ``bertkit`` command line: each module adds its subcommands, parses flags and calls library functions.

No training or model logic lives here; the handlers build the library's dataclasses and call it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bertkit.cli import core, distill, finetune, inspect, pretrain, serve
from bertkit.cli.common import UsageError

COMMAND_MODULES = (core, finetune, inspect, pretrain, distill, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertkit", description="A complete, readable BERT system.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="bertkit: %(levelname)s: %(message)s")
    try:
        return args.handler(args) or 0
    except (UsageError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"bertkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        return 130


__all__ = ["UsageError", "build_parser", "main"]
