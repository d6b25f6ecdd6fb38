"""`eventsource events tail`: the global feed of a store, optionally followed live.

    eventsource events tail [--from-position P | --from-start] [--lines N]
                            [--type T ...] [--stream ID] [--follow]

Without a start it shows the last `--lines` events (10), like `tail`; `--from-start` reads
from the first event, `--from-position P` from after the feed position P (the text of a
position as `events tail` and checkpoints print it). `--follow` then waits for new events
(woken by the store's append signals where it has them, else polling every half second)
until Ctrl-C, which ends the command with status 130; a lost connection or a database that
restarts is reported on stderr and retried (backoff up to 5 s) from the last event shown, so
no event is skipped or shown twice. One line per event; with `--json`
one JSON object per line. Events are shown as stored, never decoded. `--stream` filters the
feed in this process (`streams show` reads one stream directly).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from uuid import UUID

from eventsource.cli._ops import Output, add_common_options, runner, store_url, usage
from eventsource.cli._stored import event_fields, event_line, opened_store, stream_id
from eventsource.exceptions import InvalidPositionError
from eventsource.stores import EventStore, Position, ReadDirection, ReadOptions, StoredEvent
from eventsource.subscriptions._faults import is_infrastructure_error

__all__ = ["add_parser"]

_PROG = "eventsource events"
POLL_INTERVAL = 0.5
"""Seconds between reads of the feed while following, when no append signal came."""
RETRY_FIRST = 0.2
RETRY_MAX = 5.0
"""Seconds before the first retry after a lost connection while following, and the most."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "events",
        help="read the global feed of events (tail, follow)",
        description="The global feed of an event store, read without the application's "
        "event classes.",
    )
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    tail = subcommands.add_parser(
        "tail",
        help="the last events of the feed, or from a position; --follow for live ones",
        description="The last events of the global feed (or from a position, or from the "
        "start), one per line; --follow waits for new ones until Ctrl-C (status 130).",
    )
    add_common_options(tail)
    start = tail.add_mutually_exclusive_group()
    start.add_argument(
        "--from-position", type=_position, metavar="P", help="start after this feed position"
    )
    start.add_argument("--from-start", action="store_true", help="start at the first event")
    tail.add_argument(
        "--lines", type=_count, default=10, metavar="N", help="last events shown (default 10)"
    )
    tail.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="T",
        help="only events of this type (repeatable)",
    )
    tail.add_argument("--stream", type=stream_id, metavar="ID", help="only this stream's events")
    tail.add_argument("--follow", "-f", action="store_true", help="keep waiting for new events")
    tail.set_defaults(handler=runner(f"{_PROG} tail", _tail))
    parser.set_defaults(handler=usage(parser))


def _position(text: str) -> Position:
    try:
        return Position.parse(text)
    except InvalidPositionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 0")
    return value


async def _tail(args: argparse.Namespace, out: Output) -> int:
    types = frozenset(args.types) if args.types else None
    stream: UUID | None = args.stream
    async with opened_store(store_url(args)) as store:
        if args.from_start:
            after: Position | None = None
        elif args.from_position is not None:
            after = args.from_position
        else:
            after = await _last(store, out, args.lines, types, stream)
        cursor = _Cursor(after)
        await _rest(store, out, cursor, types, stream)
        if args.follow:
            await _follow(store, out, cursor, types, stream)
        return 0


@dataclass
class _Cursor:
    after: Position | None
    """The position of the last event read (shown or filtered out)."""


async def _follow(
    store: EventStore,
    out: Output,
    cursor: _Cursor,
    types: frozenset[str] | None,
    stream: UUID | None,
) -> None:
    """Show new events until cancelled; infrastructure failures are retried from `cursor`."""
    delay = RETRY_FIRST
    while True:
        try:
            async with store.listen() as signal:
                while True:
                    try:
                        async with asyncio.timeout(POLL_INTERVAL):
                            await signal.wait()
                    except TimeoutError:
                        pass  # no signal (another process appended, or nothing did): read
                    await _rest(store, out, cursor, types, stream)
                    delay = RETRY_FIRST
        except Exception as exc:
            if not is_infrastructure_error(exc):
                raise
            print(
                f"{_PROG} tail: {type(exc).__name__}: {exc}; retrying in {delay:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)


async def _rest(
    store: EventStore,
    out: Output,
    cursor: _Cursor,
    types: frozenset[str] | None,
    stream: UUID | None,
) -> None:
    """Show the events after `cursor`, moving it past each event as it is read (so a read
    that fails half way resumes after the last event shown)."""
    async for stored in store.read_all(ReadOptions(after=cursor.after, event_types=types)):
        if stream is None or stored.aggregate_id == stream:
            _show(stored, out)
        cursor.after = stored.position


async def _last(
    store: EventStore, out: Output, lines: int, types: frozenset[str] | None, stream: UUID | None
) -> Position:
    """Show the last `lines` events (of the filters) and return the feed position to follow
    from: the head of the feed as it was read."""
    head = await store.current_position()
    shown: list[StoredEvent] = []
    if lines:
        backward = ReadOptions(
            direction=ReadDirection.BACKWARD,
            after=_past(head),
            event_types=types,
        )
        async for stored in store.read_all(backward):
            if stream is None or stored.aggregate_id == stream:
                shown.append(stored)
                if len(shown) == lines:
                    break
    for stored in reversed(shown):
        _show(stored, out)
    return head


def _past(head: Position) -> Position:
    """The exclusive start of a backward read that includes `head`."""
    return Position(head.commit, head.sequence + 1)


def _show(stored: StoredEvent, out: Output) -> None:
    fields = event_fields(stored)
    out.line(fields, event_line(fields))
