"""`eventsource demo`: a short bank scenario run against a real event store.

It opens two accounts, moves money, has a business rule refuse a withdrawal, fires a burst of
concurrent deposits at one account (optimistic concurrency plus retries make them all land),
then shows balances rebuilt from events, one account's history and the global feed.
Each run uses fresh account ids, so it can be run again and again on the same file.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from uuid import UUID, uuid4

from eventsource.aggregates import AggregateRepository
from eventsource.cli._urls import OpenedStore, StoreURLError, open_store
from eventsource.cli.bank import (
    DEMO_REGISTRY,
    Account,
    AccountClosed,
    AccountError,
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
)
from eventsource.events import DomainEvent
from eventsource.exceptions import EventSourceError
from eventsource.stores import EventStore, Position, ReadOptions

__all__ = ["BURST", "DEFAULT_URL", "add_parser", "run", "run_scenario"]

DEFAULT_URL = "sqlite:///eventsource-demo.db"
BURST = 20
"""How many deposits the scenario sends to one account at the same time."""
BURST_AMOUNT = Decimal("5.00")

_TYPE_ORDER = [
    t.type_name() for t in (AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed)
]
_DEMO_TYPES = frozenset(_TYPE_ORDER)
_ENVELOPE_FIELDS = frozenset(DomainEvent.model_fields)

Say = Callable[[str], None]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help="run a short bank-account scenario against an event store",
        description="Run a short bank-account scenario against an event store and show "
        "what it stored. Safe to run again on the same file.",
    )
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"event store to use (default: {DEFAULT_URL}, a file in the current "
        "directory); also sqlite:////absolute/path.db, sqlite:///:memory:, memory:// and "
        "postgresql://USER@HOST/DB?schema=NAME",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done, 1 the store failed, 2 the URL cannot be used."""
    try:
        opened = open_store(args.url, registry=DEMO_REGISTRY)
    except StoreURLError as exc:
        print(f"eventsource demo: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_scenario(opened))
    except EventSourceError as exc:
        print(f"eventsource demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


async def run_scenario(opened: OpenedStore, say: Say = print) -> None:
    """Run the scenario on the store (closed afterwards), reporting through `say`."""
    async with opened.store as store:
        if opened.prepare is not None:
            await opened.prepare()
        before, last_before = await _count_demo_events(store)
        say("eventsource demo: bank accounts kept as streams of events")
        earlier = f" ({before} demo events from earlier runs)" if before else ""
        say(f"store: {opened.description}{earlier}")
        say("")
        # One stream takes one writer at a time: each of the BURST concurrent commands can
        # lose the race at most BURST - 1 times (once per other writer's commit), so this
        # many retries always suffices, whatever the timing (the default is 10).
        repo = AggregateRepository(store, Account, max_retries=BURST)
        alice, bob = await _act(repo, say)
        say("")
        await _report(repo, say, alice, bob)
        say("")
        await _feed_summary(store, say, {alice, bob}, before, last_before)
        if opened.start_over:
            say(f"Run the demo again to add to this store, or {opened.start_over} to start over.")


async def _act(repo: AggregateRepository[Account], say: Say) -> tuple[UUID, UUID]:
    """The commands of the scenario; returns the ids of Alice's and Bob's accounts."""
    alice, bob = uuid4(), uuid4()
    await repo.execute(alice, lambda a: a.open("Alice"), create=True)
    await repo.execute(alice, lambda a: a.deposit(Decimal("100.00")))
    say(f" 1. Alice opens account {_short(alice)} and deposits 100.00")
    await repo.execute(bob, lambda a: a.open("Bob", overdraft_limit=Decimal("50.00")), create=True)
    await repo.execute(bob, lambda a: a.deposit(Decimal("20.00")))
    say(f" 2. Bob opens account {_short(bob)} (overdraft limit 50.00) and deposits 20.00")

    await repo.execute(alice, lambda a: a.withdraw(Decimal("30.00")))
    await repo.execute(bob, lambda a: a.deposit(Decimal("30.00")))
    say(" 3. Alice sends Bob 30.00: a withdrawal from her stream, then a deposit to his")

    say(" 4. Bob tries to withdraw 200.00")
    await _refused(say, repo.execute(bob, lambda a: a.withdraw(Decimal("200.00"))))

    attempts = await _burst(repo, alice)
    say(f" 5. {BURST} deposits of {BURST_AMOUNT} reach Alice's account at the same time")
    say(
        f"    all {BURST} saved; {attempts - BURST} times a deposit found the account changed "
        "under it, reloaded and retried"
    )

    await repo.execute(bob, lambda a: a.withdraw(Decimal("50.00")))
    await repo.execute(bob, lambda a: a.close())
    say(" 6. Bob withdraws 50.00, closes his account, then tries to deposit 10.00")
    await _refused(say, repo.execute(bob, lambda a: a.deposit(Decimal("10.00"))))
    return alice, bob


async def _refused(say: Say, command: Awaitable[object]) -> None:
    """Await a command that a business rule should refuse, and report the refusal."""
    try:
        await command
    except AccountError as exc:
        say(f"    refused ({type(exc).__name__}): {exc.reason}")
    else:  # pragma: no cover - the scenario is built so that this cannot happen
        raise AssertionError("the command should have been refused")


async def _burst(repo: AggregateRepository[Account], account_id: UUID) -> int:
    """Run BURST concurrent deposits on one account; returns how many attempts they took."""
    attempts = 0

    async def deposit(account: Account) -> None:
        nonlocal attempts
        attempts += 1
        # Stands in for I/O a real command awaits between load and save (a fraud check,
        # say): it lets the other deposits load the same version in the meantime.
        await asyncio.sleep(0)
        account.deposit(BURST_AMOUNT)

    # The annotation matters: execute() takes `Callable[[A], R | Awaitable[R]]`, and without
    # an expected type mypy solves R = Never for an async command and rejects the call.
    runs: list[Awaitable[None]] = [repo.execute(account_id, deposit) for _ in range(BURST)]
    await asyncio.gather(*runs)
    return attempts


async def _report(repo: AggregateRepository[Account], say: Say, alice: UUID, bob: UUID) -> None:
    say("Balances, rebuilt from the stored events:")
    for account_id in (alice, bob):
        account = await repo.load(account_id)
        state = account.state
        status = "closed" if state.closed else "open"
        say(
            f"  {state.owner:<6} {_short(account_id)}  {state.balance:>7.2f}  {status:<6}"
            f"  version {account.version}"
        )
    say("")
    say(f"Bob's history (stream {bob}):")
    async for stored in repo.event_store.read_stream(bob):
        say(f"  v{stored.version}  {stored.event_type:<15} {_data(stored.event)}".rstrip())
    say("  (the refused commands left no events)")


async def _count_demo_events(store: EventStore) -> tuple[int, Position | None]:
    """How many demo events the global feed holds, and the position of the last one."""
    count, last = 0, None
    async for stored in store.read_all(ReadOptions(event_types=_DEMO_TYPES)):
        count, last = count + 1, stored.position
    return count, last


async def _feed_summary(
    store: EventStore, say: Say, accounts: set[UUID], before: int, after: Position | None
) -> None:
    """Summarise this run's events as the global feed (`read_all`) delivers them."""
    by_type: Counter[str] = Counter()
    first: Position | None = None
    last: Position | None = None
    total = before
    async for stored in store.read_all(ReadOptions(after=after, event_types=_DEMO_TYPES)):
        total += 1
        if stored.aggregate_id in accounts:
            by_type[stored.event_type] += 1
            if first is None:
                first = stored.position
            last = stored.position
    start = f"after position {after}" if after is not None else "from the start"
    say(f"Global feed, all streams in commit order (read_all {start}):")
    say(f"  this run appended {by_type.total()} events, positions {first} to {last}")
    say("  " + ", ".join(f"{name} {by_type[name]}" for name in _TYPE_ORDER))
    say(f"  the store now holds {total} demo events")


def _short(account_id: UUID) -> str:
    return account_id.hex[:8]


def _data(event: DomainEvent) -> str:
    """The event's business fields (not the envelope every event carries), as k=v pairs."""
    data = event.model_dump(mode="json", exclude=set(_ENVELOPE_FIELDS))
    return " ".join(f"{name}={value}" for name, value in data.items())
