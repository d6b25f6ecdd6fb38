"""`eventsource outbox status|retry`: the transactional outbox of the store at `--url`.

- `status`: rows pending (and of them failing), parked, published and not cleaned up yet,
  the age of the oldest pending row, and the relays at work (rows under a live lease, live
  leases); then the parked rows with their last error;
- `retry ID... | --all`: puts parked rows back to pending with their attempts reset
  (`OutboxRepository.retry_parked`): a running relay publishes them, then the later rows of
  their aggregates that they held back. Discarding a parked row is the library's
  `discard_parked`, deliberately not offered here: it drops an event its consumers never see.

Exit status 1 when an id named no parked row (the others are still retried).
"""

from __future__ import annotations

import argparse

from eventsource._internal.clock import utc_now
from eventsource.cli._ops import CommandError, Output, add_common_options, runner, store_url, usage
from eventsource.config import create_outbox_repository
from eventsource.outbox import OutboxEntry

__all__ = ["add_parser"]

_PROG = "eventsource outbox"
_PARKED_SHOWN = 100


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "outbox",
        help="outbox backlog, parked rows and relays; retry parked rows",
        description="The transactional outbox the store's appends fill (outbox=true).",
    )
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    status = subcommands.add_parser(
        "status", help="pending, parked, oldest age, relay leases; the parked rows"
    )
    retry = subcommands.add_parser("retry", help="put parked rows back for the relay")
    retry.add_argument("ids", type=int, nargs="*", metavar="ID", help="parked row ids")
    retry.add_argument("--all", action="store_true", help="every parked row")
    for name, sub, action in (("status", status, _status), ("retry", retry, _retry)):
        add_common_options(sub)
        sub.set_defaults(handler=runner(f"{_PROG} {name}", action))
    parser.set_defaults(handler=usage(parser))


def _row(entry: OutboxEntry) -> list[object]:
    return [
        entry.id,
        entry.event_type,
        entry.aggregate_type,
        entry.aggregate_id,
        entry.aggregate_version,
        entry.attempts,
        entry.parked_at,
        entry.last_error,
    ]


async def _status(args: argparse.Namespace, out: Output) -> int:
    async with create_outbox_repository(store_url(args)) as outbox:
        stats = await outbox.stats()
        parked = await outbox.list_parked(_PARKED_SHOWN) if stats.parked else []
    oldest = stats.oldest_pending
    age = (utc_now() - oldest).total_seconds() if oldest is not None else None
    fields: dict[str, object] = {
        "Pending": stats.pending,
        "Failing": stats.failing,
        "Parked": stats.parked,
        "Published": stats.published,
        "Oldest pending": oldest,
        "Oldest pending age seconds": round(age, 3) if age is not None else None,
        "Leased rows": stats.leased,
        "Relays publishing": stats.relays,
    }
    if out.json:
        columns = (
            "id",
            "event_type",
            "aggregate_type",
            "aggregate_id",
            "aggregate_version",
            "attempts",
            "parked_at",
            "last_error",
        )
        fields["Parked rows"] = [dict(zip(columns, _row(entry), strict=True)) for entry in parked]
        out.record(fields)
        return 0
    out.record(fields, title="outbox")
    if parked:
        out.table(
            (
                "ID",
                "Event type",
                "Aggregate type",
                "Aggregate ID",
                "Version",
                "Attempts",
                "Parked at",
                "Last error",
            ),
            [_row(entry) for entry in parked],
            title=f"parked rows (first {_PARKED_SHOWN})"
            if stats.parked > len(parked)
            else "parked rows",
        )
    return 0


async def _retry(args: argparse.Namespace, out: Output) -> int:
    if args.all == bool(args.ids):
        raise CommandError("name the parked rows to retry (ID ...) or pass --all, not both")
    results = []
    async with create_outbox_repository(store_url(args)) as outbox:
        ids = list(args.ids)
        if args.all:
            while batch := [e.id for e in await outbox.list_parked(1000) if e.id not in ids]:
                for entry_id in batch:
                    await outbox.retry_parked(entry_id)
                ids.extend(batch)
            results = [[entry_id, "retried"] for entry_id in ids]
        else:
            for entry_id in ids:
                retried = await outbox.retry_parked(entry_id)
                results.append([entry_id, "retried" if retried else "not parked"])
    out.table(("ID", "Outcome"), results)
    out.message(f"{sum(row[1] == 'retried' for row in results)} rows back to pending")
    return 0 if all(row[1] == "retried" for row in results) else 1
