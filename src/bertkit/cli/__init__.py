"""The ``bertkit`` command line: each module adds its subcommands, parses flags and calls library functions.

No training or model logic lives here; the handlers build the library's dataclasses and call it. Every fault a
user can cause or meet (bad input, a full or read-only disk, a busy run folder, a damaged checkpoint) ends as one
line on standard error naming the file or flag, and a non-zero exit status: 2 for bad input, 1 for the rest.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys

from bertkit.cli import core, distill, finetune, inspect, pretrain, serve
from bertkit.cli.common import OneLineParser, UsageError, check_numbers

COMMAND_MODULES = (core, finetune, inspect, pretrain, distill, serve)
BAD_INPUT, FAULT = 2, 1

# OSError numbers whose usual wording ("[Errno 28] No space left on device") gains a hint.
_OS_HINTS = {errno.ENOSPC: "disk full", errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.EDQUOT: "disk quota exceeded"}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bertkit", description="A complete, readable BERT system.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    check_numbers(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="bertkit: %(levelname)s: %(message)s")
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        print("bertkit: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        status = exit_status(err)
        if status is None:
            raise  # a defect in bertkit, not a fault of the input or the machine: the traceback is for us
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        print(f"bertkit {command}: error: {describe(err)}", file=sys.stderr)
        return status


def exit_status(err: Exception) -> int | None:
    """2 for bad input, 1 for a fault of the machine or the run folder, None for anything else (a bug)."""
    from bertkit.train.checkpointing import CheckpointError, RunFolderBusy

    if isinstance(err, UsageError | ValueError | FileNotFoundError | FileExistsError | NotADirectoryError
                  | IsADirectoryError):
        return BAD_INPUT
    if isinstance(err, OSError | CheckpointError | RunFolderBusy):
        return FAULT
    return None


def describe(err: Exception) -> str:
    """The error as one line: an OSError names its path(s) and a plain cause, line breaks are folded."""
    if isinstance(err, OSError) and err.strerror:
        cause = _OS_HINTS.get(err.errno, err.strerror)
        paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
        text = f"{paths}: {cause}" if paths else cause
    else:
        text = str(err) or type(err).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


__all__ = ["UsageError", "build_parser", "main"]
