"""`eventsource migrate`: move an application's events from one store to another.

    eventsource migrate copy   --from URL --to URL [--tenant ID] [--follow]
    eventsource migrate status --from URL --to URL [--tenant ID]
    eventsource migrate verify --from URL --to URL [--tenant ID]
    eventsource migrate map-checkpoints --from URL --to URL [--name NAME ...]

Each subcommand runs `eventsource.migration.StoreMigration` (see docs/migration.md for the
cutover procedure). `copy` is resumable: run it again after an interruption (Ctrl-C, a
crash, a kill) and it goes on from its checkpoint; it prints a progress line (count, rate,
ETA) on stderr. Exit status: 0 done (verify: no difference), 1 a store failed or verify found
differences, 2 bad input (a one-line error).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TextIO
from uuid import UUID

from eventsource.exceptions import ConfigurationError, EventSourceError, MigrationError
from eventsource.migration import CopyProgress, StoreMigration
from eventsource.migration.urls import open_migration

__all__ = ["add_parser", "format_progress"]

_PROG = "eventsource migrate"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "migrate",
        help="copy events from one store to another while the application runs",
        description="Copy an event store into another (resumable, one tenant at a time if "
        "wanted), report the sync lag, verify, and map subscriptions' checkpoints.",
    )
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    for name, action, text in (
        ("copy", _copy, "copy the source's events into the target (resumes where it stopped)"),
        ("status", _status, "how far the copy is behind the source (events and seconds)"),
        ("verify", _verify, "compare per-stream counts and checksums of source and target"),
        ("map-checkpoints", _map, "translate the source's subscription checkpoints"),
    ):
        sub = subcommands.add_parser(name, help=text, description=text)
        _common(sub)
        if name == "copy":
            sub.add_argument("--follow", action="store_true", help="keep tailing the source")
            sub.add_argument("--batch-size", type=int, default=500, help="events per page")
        if name == "map-checkpoints":
            sub.add_argument(
                "--checkpoint",
                dest="names",
                action="append",
                metavar="NAME",
                help="map only this subscription (repeatable; default: all)",
            )
        sub.set_defaults(handler=_runner(action))
    parser.set_defaults(handler=lambda _: _usage(parser))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="URL", help="source")
    parser.add_argument("--to", dest="target", required=True, metavar="URL", help="target")
    parser.add_argument("--tenant", type=_uuid, help="copy only this tenant's events")
    parser.add_argument(
        "--name", help="migration name (default: one per tenant); its checkpoint's key"
    )
    parser.add_argument(
        "--state", metavar="URL", help="where the migration checkpoint lives (default: --to)"
    )


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a tenant id (a UUID)") from None


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


Action = Callable[[StoreMigration, argparse.Namespace], Awaitable[int]]


def _runner(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(_run(action, args))
        except (ConfigurationError, MigrationError) as exc:
            print(f"{_PROG}: {exc}", file=sys.stderr)
            return 2
        except EventSourceError as exc:
            print(f"{_PROG}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1

    return run


async def _run(action: Action, args: argparse.Namespace) -> int:
    async with open_migration(
        args.source,
        args.target,
        state_url=args.state,
        tenant_id=args.tenant,
        name=args.name,
        batch_size=getattr(args, "batch_size", 500),
    ) as migration:
        return await action(migration, args)


def format_progress(progress: CopyProgress) -> str:
    """`copied 1,200 events, 3,400 to go, 2,150 events/s, ETA 0:00:02`."""
    eta = progress.eta
    shown = "?" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
    return (
        f"copied {progress.copied:,} events, {progress.remaining:,} to go, "
        f"{progress.rate:,.0f} events/s, ETA {shown}"
    )


async def _copy(migration: StoreMigration, args: argparse.Namespace) -> int:
    out: TextIO = sys.stderr
    last = 0.0

    def show(progress: CopyProgress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 0.2 or progress.remaining == 0:
            last = now
            out.write(f"\r{format_progress(progress)}\033[K")
            out.flush()

    copied = await migration.copy(follow=args.follow, on_progress=show)
    status = await migration.status()
    out.write(f"\rcopied {copied:,} events; {status.behind:,} behind the source\033[K\n")
    return 0


async def _status(migration: StoreMigration, args: argparse.Namespace) -> int:
    status = await migration.status()
    position = "not started" if status.position is None else str(status.position)
    print(
        f"copied {status.copied:,} events up to source position {position}; "
        f"{status.behind:,} behind ({status.behind_seconds:.1f} s), "
        f"source head {status.source_head}"
    )
    return 0


async def _verify(migration: StoreMigration, args: argparse.Namespace) -> int:
    report = await migration.verify()
    for difference in report.differences:
        print(
            f"{difference.aggregate_id}: {difference.reason} (source {difference.source_count}, "
            f"target {difference.target_count})"
        )
    verdict = "match" if report.ok else f"{len(report.differences)} streams differ"
    print(
        f"{report.streams:,} streams, {report.source_events:,} source events, "
        f"{report.target_events:,} target events: {verdict}"
    )
    return 0 if report.ok else 1


async def _map(migration: StoreMigration, args: argparse.Namespace) -> int:
    from eventsource.config import create_checkpoint_repository

    async with (
        create_checkpoint_repository(args.source) as source,
        create_checkpoint_repository(args.target) as target,
    ):
        mapped = await migration.map_checkpoints(source, target, names=args.names)
    for checkpoint in mapped:
        print(f"{checkpoint.name}: {checkpoint.source_position} -> {checkpoint.target_position}")
    print(f"mapped {len(mapped)} checkpoints")
    return 0
