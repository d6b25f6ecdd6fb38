"""The `eventsource` command line: `eventsource demo` runs the bank-account demo,
`eventsource migrate` moves events from one store to another, `eventsource serve` serves a
store over gRPC; `db`, `streams` and `events` set up and read a store (docs/cli.md);
`subscriptions`, `projections`, `dlq`, `outbox` and `bench` operate a deployment
(docs/operations.md).

Each subcommand module supplies `add_parser(commands)`, which registers its parser and sets
`handler`, a function from the parsed arguments to the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from eventsource.cli import (
    bench,
    db,
    demo,
    dlq,
    events,
    migrate,
    outbox,
    projections,
    serve,
    streams,
    subscriptions,
)
from eventsource.cli._ops import CommandParser

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from eventsource import __version__

    parser: argparse.ArgumentParser = CommandParser(
        prog="eventsource",
        description="Async-first event sourcing for Python. Start with: eventsource demo",
    )
    parser.add_argument("--version", action="version", version=f"eventsource {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    demo.add_parser(commands)
    migrate.add_parser(commands)
    serve.add_parser(commands)
    db.add_parser(commands)
    streams.add_parser(commands)
    events.add_parser(commands)
    subscriptions.add_parser(commands)
    projections.add_parser(commands)
    dlq.add_parser(commands)
    outbox.add_parser(commands)
    bench.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`); returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: keep argparse's status
        return exc.code if isinstance(exc.code, int) else 2
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`eventsource demo | head`): stop quietly. Point stdout at
        # devnull so the interpreter's final flush does not report the broken pipe again.
        _silence_stdout()
        return 1


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests, embedding)
        pass
