"""`eventsource dlq list|show|retry|resolve|discard`: the subscriptions' dead letters.

- `list [--subscription NAME] [--status failed|retrying|resolved|all] [--limit N]`;
- `show ID`: one letter with its payload and traceback;
- `retry ID... --app MODULE:ATTR`: hands each event to its subscription's handler again,
  once (`SubscriptionManager.retry_dead_letter`): resolved when it succeeds, FAILED again
  with the new error when not; with `park_aggregate`, the events parked behind it follow in
  order. The handler is application code, hence `--app` (see `cli/_app.py`);
- `resolve ID... [--by WHO]`: closes letters whose effect someone applied by hand (the
  library's `resolve`, status RESOLVED, `resolved_by` WHO);
- `discard ID... [--by WHO]`: closes letters whose event must never be applied: the same
  RESOLVED status (the library keeps every letter, as an audit trail), `resolved_by`
  `discarded by WHO`, so the two stay told apart.

Neither `resolve` nor `discard` releases events parked behind a letter (`park_aggregate`):
`retry` does. Exit status 1 when a retry fails again or a letter was not in a state to act
on (the others are still done); 2 for an unknown id or bad input.
"""

from __future__ import annotations

import argparse
import getpass
from typing import cast
from uuid import UUID

from eventsource.cli._app import add_app_option, open_manager
from eventsource.cli._ops import (
    CommandError,
    Output,
    add_common_options,
    positive,
    runner,
    store_url,
    usage,
)
from eventsource.config import create_dlq_repository
from eventsource.protocols import DeadLetterStatus
from eventsource.repositories import DeadLetter, DLQRepository
from eventsource.subscriptions.interface import NotAdmittedError

__all__ = ["add_parser"]

_PROG = "eventsource dlq"
_COLUMNS = (
    "ID",
    "Subscription",
    "Status",
    "Event type",
    "Event ID",
    "Position",
    "Attempts",
    "Last failed at",
    "Error",
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dlq",
        help="list, show, retry, resolve or discard subscriptions' dead letters",
        description="The events subscriptions' handlers gave up on (the dead-letter table).",
    )
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    listing = subcommands.add_parser("list", help="dead letters, oldest failure first")
    listing.add_argument("--subscription", metavar="NAME", help="one subscription's only")
    listing.add_argument(
        "--status",
        choices=[*(s.value for s in DeadLetterStatus), "all"],
        default=DeadLetterStatus.FAILED.value,
        help="which letters (default: failed, the ones waiting for someone)",
    )
    listing.add_argument("--limit", type=positive, default=100, help="at most N (default 100)")
    show = subcommands.add_parser("show", help="one dead letter: payload, error, traceback")
    show.add_argument("id", type=_uuid, metavar="ID")
    retry = subcommands.add_parser(
        "retry", help="hand events to their handler again (needs --app: the handler's code)"
    )
    retry.add_argument("ids", type=_uuid, nargs="+", metavar="ID")
    add_app_option(retry, required=True)
    closing = {
        "resolve": "close letters whose effect was applied by hand",
        "discard": "close letters whose event must never be applied",
    }
    parsers = {"list": listing, "show": show, "retry": retry}
    for name, text in closing.items():
        sub = parsers[name] = subcommands.add_parser(name, help=text, description=text)
        sub.add_argument("ids", type=_uuid, nargs="+", metavar="ID")
        sub.add_argument("--by", metavar="WHO", help="who closes them (default: the user)")
    for name, action in (
        ("list", _list),
        ("show", _show),
        ("retry", _retry),
        ("resolve", _resolve),
        ("discard", _discard),
    ):
        add_common_options(parsers[name])
        parsers[name].set_defaults(handler=runner(f"{_PROG} {name}", action))
    parser.set_defaults(handler=usage(parser))


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a dead letter id (a UUID)") from None


def _row(letter: DeadLetter) -> list[object]:
    return [
        letter.id,
        letter.subscription,
        letter.status,
        letter.event_type,
        letter.event_id,
        letter.position,
        letter.attempts,
        letter.last_failed_at,
        letter.error,
    ]


async def _list(args: argparse.Namespace, out: Output) -> int:
    status = None if args.status == "all" else DeadLetterStatus(args.status)
    async with create_dlq_repository(store_url(args)) as dead_letters:
        letters = await dead_letters.list(args.subscription, status=status, limit=args.limit)
    out.table(_COLUMNS, [_row(letter) for letter in letters])
    out.message(f"{len(letters)} dead letters")
    return 0


async def _letter(dead_letters: DLQRepository, letter_id: UUID) -> DeadLetter:
    letter = await dead_letters.get(letter_id)
    if letter is None:
        raise CommandError(f"no dead letter {letter_id}")
    return letter


async def _show(args: argparse.Namespace, out: Output) -> int:
    async with create_dlq_repository(store_url(args)) as dead_letters:
        letter = await _letter(dead_letters, args.id)
    out.record(
        {
            "ID": letter.id,
            "Subscription": letter.subscription,
            "Status": letter.status,
            "Event type": letter.event_type,
            "Event version": letter.event_version,
            "Event ID": letter.event_id,
            "Aggregate type": letter.aggregate_type,
            "Aggregate ID": letter.aggregate_id,
            "Aggregate version": letter.aggregate_version,
            "Position": letter.position,
            "Attempts": letter.attempts,
            "First failed at": letter.first_failed_at,
            "Last failed at": letter.last_failed_at,
            "Resolved at": letter.resolved_at,
            "Resolved by": letter.resolved_by,
            "Undecodable": letter.undecodable,
            "Error": letter.error,
            "Payload": letter.payload,
            "Traceback": letter.traceback,
        },
        title=f"dead letter {letter.id}",
    )
    return 0


async def _retry(args: argparse.Namespace, out: Output) -> int:
    results = []
    async with open_manager(args) as manager:
        dead_letters = cast(DLQRepository | None, manager.dead_letters)
        if dead_letters is None:
            raise CommandError(f"--app {args.app}: its manager has no dead-letter repository")
        letters = [await _letter(dead_letters, letter_id) for letter_id in args.ids]
        for letter_id, letter in zip(args.ids, letters, strict=True):
            try:
                handled = await manager.retry_dead_letter(letter_id)
            except (LookupError, ValueError, NotAdmittedError) as exc:
                # not FAILED, a subscription the app does not run, an event it does not admit
                results.append([letter_id, letter.subscription, "not retried", str(exc)])
                continue
            after = await dead_letters.get(letter_id)
            error = None if handled or after is None else after.error
            outcome = "resolved" if handled else "failed again"
            results.append([letter_id, letter.subscription, outcome, error])
    out.table(("ID", "Subscription", "Outcome", "Error"), results)
    return 0 if all(row[2] == "resolved" for row in results) else 1


async def _close(args: argparse.Namespace, out: Output, *, discard: bool) -> int:
    who = args.by or _user()
    resolved_by = f"discarded by {who}" if discard else who
    results = []
    async with create_dlq_repository(store_url(args)) as dead_letters:
        letters = [await _letter(dead_letters, letter_id) for letter_id in args.ids]
        for letter_id, letter in zip(args.ids, letters, strict=True):
            closed = await dead_letters.resolve(letter_id, resolved_by=resolved_by)
            outcome = ("discarded" if discard else "resolved") if closed else "already resolved"
            results.append([letter_id, letter.subscription, outcome])
    out.table(("ID", "Subscription", "Outcome"), results)
    return 0 if all(row[2] != "already resolved" for row in results) else 1


async def _resolve(args: argparse.Namespace, out: Output) -> int:
    return await _close(args, out, discard=False)


async def _discard(args: argparse.Namespace, out: Output) -> int:
    return await _close(args, out, discard=True)


def _user() -> str:
    try:
        return f"{getpass.getuser()} (eventsource dlq)"
    except (KeyError, OSError):  # no user name in this environment
        return "eventsource dlq"
