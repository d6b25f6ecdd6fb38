"""What the operations commands share (`db`, `streams`, `events`, `subscriptions`,
`projections`, `dlq`, `outbox`, `bench`): the store URL, human or JSON output, one-line errors.

- The store is named by `--url URL` or, without it, the `EVENTSOURCE_URL` environment variable
  (any URL `eventsource.config` reads).
- Output is a table for people (rich, from the `cli` extra, imported only when a table is
  drawn) or, with `--json`, one JSON document on stdout for scripts (a list of objects for a
  table, an object for a record; commands that follow a feed write one object per line).
- Exit status: 0 done, 1 the store or a handler failed (`ClassName: message` on stderr), 2 bad
  input (a one-line error on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from uuid import UUID

from eventsource.exceptions import ConfigurationError, EventSourceError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "URL_VARIABLE",
    "CommandError",
    "CommandParser",
    "Output",
    "add_common_options",
    "positive",
    "runner",
    "store_url",
]

URL_VARIABLE = "EVENTSOURCE_URL"


class CommandError(Exception):
    """Bad input to a command: printed as one line, exit status 2."""


class CommandParser(argparse.ArgumentParser):
    """The command line's parser: a usage error (unknown subcommand or option, bad value) is
    one line on stderr, `prog: message (see prog --help)`, exit status 2, instead of the
    usage text and the message. Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def positive(text: str) -> int:
    """An argument type: a whole number of at least 1 (a usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """`--url` (default: `$EVENTSOURCE_URL`) and `--json`."""
    parser.add_argument(
        "--url",
        metavar="URL",
        help=f"the store's URL (default: ${URL_VARIABLE}); see eventsource.config",
    )
    parser.add_argument(
        "--json", action="store_true", help="write JSON for scripts instead of a table"
    )


def store_url(args: argparse.Namespace) -> str:
    """The URL given by `--url`, else by `$EVENTSOURCE_URL`; `CommandError` without either."""
    url: str | None = getattr(args, "url", None) or os.environ.get(URL_VARIABLE)
    if not url:
        raise CommandError(f"no store given: pass --url URL or set {URL_VARIABLE}")
    return url


def plain(value: object) -> object:
    """A value as JSON has it: UUIDs, datetimes, enums and positions as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, UUID):
        return str(value)
    return str(value)


def shown(value: object) -> str:
    """A value as a table cell shows it."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(plain(value))
    return str(value)


@dataclass
class Output:
    """Where a command writes its results: tables for people, JSON with `--json`."""

    json: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    _console: Console | None = None

    def table(
        self, columns: Sequence[str], rows: Sequence[Sequence[object]], *, title: str = ""
    ) -> None:
        """Rows under named columns (JSON: a list of objects keyed by column name)."""
        if self.json:
            keys = [_key(column) for column in columns]
            self._json([dict(zip(keys, map(plain, row), strict=True)) for row in rows])
            return
        from rich.table import Table

        table = Table(title=title or None, title_justify="left", box=None, pad_edge=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(shown(cell) for cell in row))
        self.console.print(table)

    def record(self, fields: Mapping[str, object], *, title: str = "") -> None:
        """One thing's named values (JSON: an object)."""
        if self.json:
            self._json({_key(name): plain(value) for name, value in fields.items()})
            return
        from rich.table import Table

        table = Table(title=title or None, title_justify="left", box=None, show_header=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for name, value in fields.items():
            table.add_row(name, shown(value))
        self.console.print(table)

    def line(self, fields: Mapping[str, object], text: str) -> None:
        """One entry of a stream of results (`events tail`): a JSON object per line with
        `--json`, else `text`."""
        if self.json:
            self.stream.write(json.dumps({_key(k): plain(v) for k, v in fields.items()}) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A sentence for people (nothing with `--json`)."""
        if not self.json:
            self.stream.write(text + "\n")

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            # Piped or captured output keeps one line per row: no terminal width to fit.
            width = None if self.stream.isatty() else _PIPE_WIDTH
            self._console = Console(file=self.stream, soft_wrap=False, width=width)
        return self._console

    def _json(self, document: object) -> None:
        self.stream.write(json.dumps(document, indent=2) + "\n")


_PIPE_WIDTH = 1000
"""Columns a table may use when stdout is not a terminal."""


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def require_rich(args: argparse.Namespace) -> None:
    """`CommandError` when people's output is wanted and the `cli` extra is not installed."""
    if getattr(args, "json", False):
        return
    try:
        import rich  # noqa: F401
    except ImportError:
        raise CommandError(
            "tables need the cli extra: pip install 'eventsource-async[cli]' (or pass --json)"
        ) from None


Action = Callable[[argparse.Namespace, Output], Coroutine[Any, Any, int]]


def runner(prog: str, action: Action) -> Callable[[argparse.Namespace], int]:
    """The argparse handler that runs `action` on an event loop and turns errors into
    one-line messages and exit statuses (2 bad input, 1 a failure)."""

    def run(args: argparse.Namespace) -> int:
        try:
            require_rich(args)
            return asyncio.run(action(args, Output(json=getattr(args, "json", False))))
        except (CommandError, ConfigurationError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        except EventSourceError as exc:
            print(f"{prog}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1

    return run


def usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The handler of a command group called without a subcommand: its help, status 2."""

    def show(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def rows_of(items: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[list[object]]:
    """Table rows from mappings, in `columns` order (missing values shown as `-`)."""
    return [[item.get(_key(column)) for column in columns] for item in items]
