"""`eventsource streams`: the streams of a store and the events of one.

    eventsource streams list [--type T] [--limit N] [--after ID]
    eventsource streams show ID [--from-version V] [--limit N]

`list` needs a store that lists its streams (`eventsource.stores.StreamListing`: SQLite,
PostgreSQL); it pages in stream id order, `--after` the last id shown. `show` prints each
event's version, feed position, type, schema version, time and payload as stored (the
command has no event classes; nothing is decoded).
"""

from __future__ import annotations

import argparse
from typing import Any

from eventsource.cli._ops import (
    CommandError,
    Output,
    add_common_options,
    positive,
    runner,
    store_url,
    usage,
)
from eventsource.cli._stored import COLUMNS, EVENT_KEYS, event_fields, opened_store, stream_id
from eventsource.exceptions import AggregateNotFoundError
from eventsource.stores import ReadOptions, StreamListing

__all__ = ["add_parser"]

_PROG = "eventsource streams"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "streams",
        help="list a store's streams, show the events of one",
        description="The streams of an event store and their events, read without the "
        "application's event classes.",
    )
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    listing = subcommands.add_parser(
        "list",
        help="streams with their type, version and last write",
        description="Streams in stream id order with their aggregate type, version (their "
        "number of events) and the time of their last event.",
    )
    add_common_options(listing)
    listing.add_argument("--type", dest="aggregate_type", help="only streams of this type")
    listing.add_argument("--limit", type=positive, default=50, help="streams (default 50)")
    listing.add_argument(
        "--after", type=stream_id, metavar="ID", help="start after this stream id (next page)"
    )
    listing.set_defaults(handler=runner(f"{_PROG} list", _list))
    show = subcommands.add_parser(
        "show",
        help="the events of one stream",
        description="The events of one stream in version order, payloads as stored.",
    )
    add_common_options(show)
    show.add_argument("stream", type=stream_id, metavar="ID", help="the stream (aggregate) id")
    show.add_argument(
        "--from-version", type=positive, default=1, metavar="V", help="first version shown"
    )
    show.add_argument("--limit", type=positive, help="at most this many events")
    show.set_defaults(handler=runner(f"{_PROG} show", _show))
    parser.set_defaults(handler=usage(parser))


async def _list(args: argparse.Namespace, out: Output) -> int:
    async with opened_store(store_url(args)) as store:
        if not isinstance(store, StreamListing):
            raise CommandError(
                f"the {type(store).__name__} cannot list its streams; "
                "streams list works on sqlite:// and postgresql:// stores"
            )
        streams = await store.list_streams(
            aggregate_type=args.aggregate_type, after=args.after, limit=args.limit
        )
    rows = [[s.aggregate_id, s.aggregate_type, s.version, s.last_recorded_at] for s in streams]
    out.table(("Stream id", "Aggregate type", "Version", "Last write"), rows)
    if len(streams) == args.limit:
        out.message(f"more may follow: --after {streams[-1].aggregate_id}")
    return 0


async def _show(args: argparse.Namespace, out: Output) -> int:
    options = ReadOptions(from_version=args.from_version, limit=args.limit)
    async with opened_store(store_url(args)) as store:
        events: list[dict[str, Any]] = [
            event_fields(stored) async for stored in store.read_stream(args.stream, options)
        ]
        if not events and await store.get_stream_version(args.stream) == 0:
            raise AggregateNotFoundError(args.stream)
    if out.json:
        out.table(EVENT_KEYS, [[e[key] for key in EVENT_KEYS] for e in events])
        return 0
    rows = [
        [e["version"], e["position"], e["type"], e["schema"], e["occurred_at"], e["payload"]]
        for e in events
    ]
    out.message(f"stream {args.stream}")
    out.table(COLUMNS, rows)
    return 0
