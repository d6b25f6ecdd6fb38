"""`eventsource subscriptions status [NAME]`: how far each subscription is, from the durable
state the URL reaches (the running processes are not asked):

- position and events handled: the checkpoint table;
- lag: the events of the feed after the checkpoint, counted by the store (`count_events`,
  no event read), and the age of the oldest of them (one event read), in seconds. A
  filtered subscription that is catching up is counted against every event type (an upper
  bound); once caught up its checkpoint is at the feed's end and its lag 0;
- dead letters waiting (FAILED), being retried, and the last error: the dead-letter table;
- owner: on PostgreSQL, the session holding the subscription's lease (`pg_locks`; leases
  taken by `PostgreSQLLeases.for_store`), none elsewhere.

State: `caught up`, `behind`, `failing` (dead letters wait; the subscription flows past them),
`parked` (some wait behind an earlier dead letter of their aggregate, `park_aggregate`) or
`no checkpoint` (it never saved one).
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime

from eventsource._internal.clock import utc_now
from eventsource._internal.closing import closing_iterator
from eventsource.cli._ops import (
    CommandError,
    Output,
    add_common_options,
    runner,
    store_url,
    usage,
)
from eventsource.config import (
    ConfigurationError,
    create_checkpoint_repository,
    create_dlq_repository,
    create_event_store,
    parse_database_url,
)
from eventsource.protocols import DeadLetterStatus
from eventsource.repositories import Checkpoint, DLQRepository
from eventsource.stores import EventStore, Position, ReadOptions
from eventsource.subscriptions.interface import AggregateParkedError

__all__ = ["add_parser", "lease_holders", "subscription_status"]

_PROG = "eventsource subscriptions"
_PARTITION = re.compile(r"\.p(\d+)of(\d+)$")
_LETTERS_READ = 10_000
"""Waiting dead letters read per subscription to find the last error and parked ones."""
_COLUMNS = (
    "Name",
    "State",
    "Position",
    "Handled",
    "Behind",
    "Lag seconds",
    "Dead letters",
    "Retrying",
    "Owner",
    "Last error",
    "Updated at",
)
_NARROW = ("Name", "State", "Position", "Handled", "Behind", "Lag seconds", "Dead letters", "Owner")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "subscriptions",
        help="how far each subscription is: position, lag, dead letters, owner",
        description="Subscriptions as their checkpoints, dead letters and leases show them.",
    )
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    status = subcommands.add_parser(
        "status",
        help="position, lag (events and seconds), state, last error and owner",
        description="Every subscription with a checkpoint or dead letters (or just NAME).",
    )
    status.add_argument("name", nargs="?", metavar="NAME", help="one subscription only")
    add_common_options(status)
    status.set_defaults(handler=runner(f"{_PROG} status", _status))
    parser.set_defaults(handler=usage(parser))


@contextlib.asynccontextmanager
async def _opened(url: str) -> AsyncIterator[tuple[EventStore, DLQRepository | None]]:
    store = create_event_store(url)
    try:
        dead_letters: DLQRepository | None = create_dlq_repository(url)
    except ConfigurationError:  # NATS keeps no dead letters
        dead_letters = None
    try:
        yield store, dead_letters
    finally:
        if dead_letters is not None:
            await dead_letters.close()
        await store.close()


@dataclass(frozen=True, slots=True)
class _Letters:
    waiting: int = 0
    retrying: int = 0
    parked: bool = False
    last_error: str | None = None


async def _letters(dead_letters: DLQRepository | None, name: str) -> _Letters:
    if dead_letters is None:
        return _Letters()
    waiting = await dead_letters.count(name, status=DeadLetterStatus.FAILED)
    retrying = await dead_letters.count(name, status=DeadLetterStatus.RETRYING)
    if not waiting:
        return _Letters(0, retrying)
    letters = await dead_letters.list(name, limit=_LETTERS_READ)
    parked = any(letter.error.startswith(AggregateParkedError.__name__) for letter in letters)
    own = [letter for letter in letters if not letter.error.startswith("AggregateParked")]
    last = max(own or letters, key=lambda letter: letter.last_failed_at)
    return _Letters(waiting, retrying, parked, last.error)


async def lease_holders(url: str, store: EventStore, names: Iterable[str]) -> dict[str, str]:
    """Who holds each subscription's lease (PostgreSQL; `{}` elsewhere), for people."""
    if parse_database_url(url).backend != "postgresql":
        return {}
    from eventsource.subscriptions.postgresql import PostgreSQLLeases

    found = await PostgreSQLLeases.for_store(store).holders(names)
    return {
        name: " ".join(
            part
            for part in (
                f"pid {h.pid}",
                h.application_name,
                h.client_addr and f"from {h.client_addr}",
            )
            if part
        )
        for name, h in found.items()
    }


async def subscription_status(
    store: EventStore,
    checkpoints: Iterable[Checkpoint],
    dead_letters: DLQRepository | None,
    *,
    only: str | None = None,
) -> list[dict[str, object]]:
    """One dict per subscription (keys: the table's columns, lower case), by name."""
    by_name = {c.name: c for c in checkpoints}
    names = set(by_name)
    if dead_letters is not None:
        for status in (DeadLetterStatus.FAILED, DeadLetterStatus.RETRYING):
            waiting = await dead_letters.list(status=status, limit=_LETTERS_READ)
            names.update(letter.subscription for letter in waiting)
    if only is not None:
        if only not in names:
            known = ", ".join(sorted(names)) or "none"
            raise CommandError(
                f"no subscription {only!r} has a checkpoint or dead letters (known: {known})"
            )
        names = {only}
    now = utc_now()
    report: list[dict[str, object]] = []
    for name in sorted(names):
        checkpoint = by_name.get(name)
        position = checkpoint.position if checkpoint is not None else None
        match = _PARTITION.search(name)
        partition = (int(match[1]), int(match[2])) if match else None
        if partition is not None and not 0 <= partition[0] < partition[1]:
            partition = None
        behind = await store.count_events(ReadOptions(after=position, partition=partition))
        lag = 0.0
        if behind:
            oldest = await _first_after(store, position, partition)
            lag = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        letters = await _letters(dead_letters, name)
        if letters.waiting:
            state = "parked" if letters.parked else "failing"
        elif checkpoint is None:
            state = "no checkpoint"
        else:
            state = "behind" if behind else "caught up"
        report.append(
            {
                "name": name,
                "state": state,
                "position": str(position) if position is not None else None,
                "handled": checkpoint.events_processed if checkpoint is not None else 0,
                "behind": behind,
                "lag_seconds": round(lag, 3),
                "dead_letters": letters.waiting,
                "retrying": letters.retrying,
                "owner": None,
                "last_error": letters.last_error,
                "updated_at": checkpoint.updated_at if checkpoint is not None else None,
            }
        )
    return report


async def _first_after(
    store: EventStore, position: Position | None, partition: tuple[int, int] | None
) -> datetime | None:
    options = ReadOptions(after=position, limit=1, batch_size=1, partition=partition)
    async with closing_iterator(store.read_all(options)) as feed:
        async for stored in feed:
            return stored.recorded_at
    return None


async def _status(args: argparse.Namespace, out: Output) -> int:
    url = store_url(args)
    async with _opened(url) as (store, dead_letters):
        async with create_checkpoint_repository(url) as checkpoint_repository:
            checkpoints = await checkpoint_repository.list()
        report = await subscription_status(store, checkpoints, dead_letters, only=args.name)
        owners = await lease_holders(url, store, [str(row["name"]) for row in report])
    for row in report:
        row["owner"] = owners.get(str(row["name"]))
    if args.name is not None:
        out.record({column: report[0][_key(column)] for column in _COLUMNS}, title=args.name)
    elif out.json:
        out.table(_COLUMNS, [[row[_key(c)] for c in _COLUMNS] for row in report])
    else:  # the narrow columns in a table, the long texts below it
        out.table(_NARROW, [[row[_key(c)] for c in _NARROW] for row in report])
        for row in report:
            if row["last_error"] is not None:
                out.message(f"{row['name']}: last error: {row['last_error']}")
        out.message(f"{len(report)} subscriptions")
    return 0


def _key(column: str) -> str:
    return column.lower().replace(" ", "_")
