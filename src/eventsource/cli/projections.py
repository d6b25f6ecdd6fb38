"""`eventsource projections rebuild NAME --app MODULE:ATTR`: replay a projection from the
beginning of the feed (`SubscriptionManager.rebuild`: stop, reset the checkpoint, call the
projection's `reset()`, replay up to the feed's end as of the start).

The projection's code lives in the application, so `--app` names it (see `cli/_app.py`):
a `SubscriptionManager` that runs NAME, a projection named NAME (then `--url` names the store,
checkpoints and dead letters), or a function returning one. Progress goes to stderr: a rich
progress bar on a terminal (count, total, percent, rate, ETA), else a plain line a second.

Run it while no other process runs NAME: on PostgreSQL with leases the command refuses when
another session holds NAME's lease; without leases it cannot tell, and a running process
would move the reset checkpoint forward again.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from eventsource.cli._app import add_app_option, open_manager
from eventsource.cli._ops import CommandError, Output, add_common_options, runner, usage
from eventsource.exceptions import ProjectionError
from eventsource.subscriptions import RebuildProgress, SubscriptionManager

__all__ = ["add_parser", "format_progress"]

_PROG = "eventsource projections"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "projections",
        help="rebuild a projection of the application from the beginning of the feed",
        description="Operate the application's projections (imported with --app).",
    )
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    rebuild = subcommands.add_parser(
        "rebuild",
        help="reset a projection and replay every event into it, with a progress bar",
        description="Reset the projection NAME (its checkpoint and read model) and replay "
        "the feed into it up to the end as of the start; it then stops.",
    )
    rebuild.add_argument("name", metavar="NAME", help="the projection's subscription name")
    add_app_option(rebuild, required=True)
    rebuild.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up after this long (default: none)"
    )
    add_common_options(rebuild)
    rebuild.set_defaults(handler=runner(f"{_PROG} rebuild", _rebuild))
    parser.set_defaults(handler=usage(parser))


def format_progress(progress: RebuildProgress) -> str:
    """`rebuilding Totals: 1,200/3,400 events (35.3%), 2,150 events/s, ETA 0:00:02`."""
    return (
        f"rebuilding {progress.name}: {progress.processed:,}/{progress.total:,} events "
        f"({progress.percent:.1f}%), {progress.rate:,.0f} events/s, ETA {_clock(progress.eta)}"
    )


def _clock(seconds: float | None) -> str:
    return "?" if seconds is None else time.strftime("%H:%M:%S", time.gmtime(seconds))


async def _rebuild(args: argparse.Namespace, out: Output) -> int:
    async with open_manager(args) as manager:
        names = [subscription.name for subscription in manager.subscriptions]
        if args.name not in names:
            raise CommandError(
                f"--app {args.app} runs no subscription {args.name!r} "
                f"(it runs: {', '.join(names) or 'none'})"
            )
        await _refuse_if_running(manager, args.name)
        last: RebuildProgress | None = None
        with _reporter(args.name, plain=out.json) as report:

            def show(progress: RebuildProgress) -> None:
                nonlocal last
                last = progress
                report(progress)

            try:
                await manager.rebuild(args.name, progress=show, timeout=args.timeout)
            except TimeoutError:
                raise ProjectionError(
                    f"rebuild of {args.name!r} did not finish within {args.timeout} s; it "
                    "starts over from the beginning when run again"
                ) from None
            except RuntimeError as exc:  # the subscription FAILED (no dead-letter sink)
                raise ProjectionError(str(exc)) from None
    assert last is not None
    out.record(
        {
            "name": last.name,
            "events": last.processed,
            "total": last.total,
            "percent": round(last.percent, 1),
            "seconds": round(last.elapsed, 3),
            "rate": round(last.rate, 1),
            "position": last.position,
        },
        title=f"rebuilt {last.name}",
    )
    return 0


async def _refuse_if_running(manager: SubscriptionManager, name: str) -> None:
    """`CommandError` when another session holds `name`'s PostgreSQL lease."""
    holders = getattr(manager.leases, "holders", None)
    if holders is None:
        return
    held = (await holders([name])).get(name)
    if held is not None:
        application = held.application_name or "no application name"
        raise CommandError(
            f"{name!r} is running: PostgreSQL session {held.pid} ({application}) holds its "
            "lease; stop that subscription first"
        )


@contextmanager
def _reporter(name: str, *, plain: bool) -> Iterator[Callable[[RebuildProgress], None]]:
    """Progress on stderr: a rich bar on a terminal (unless `plain`: with `--json`), else a
    plain line at most once a second."""
    if plain or not sys.stderr.isatty():
        shown = 0.0

        def line(progress: RebuildProgress) -> None:
            nonlocal shown
            now = time.monotonic()
            if progress.done or now - shown >= 1.0:
                shown = now
                print(format_progress(progress), file=sys.stderr, flush=True)

        yield line
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("rebuilding {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[rate]:>10,.0f} events/s"),
        TextColumn("ETA {task.fields[eta]}"),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(name, total=None, rate=0.0, eta="?")

        def draw(progress: RebuildProgress) -> None:
            total = max(progress.total, progress.processed)
            bar.update(
                task,
                total=total,
                completed=total if progress.done else progress.processed,
                rate=progress.rate,
                eta=_clock(progress.eta),
            )

        yield draw
