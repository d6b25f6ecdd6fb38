"""`eventsource demo`: a short bank scenario run against a real event store.

It opens two accounts, moves money, has a business rule refuse a withdrawal, fires a burst of
concurrent deposits at one account (optimistic concurrency plus retries make them all land),
then shows balances rebuilt from events, one account's history and the global feed.
Meanwhile a subscription feeds a read model (`AccountBalances`) from the global feed: it
first catches up on earlier runs' events, then follows the commands, and after each step the
demo waits for that step's last position before showing it (read-your-writes).
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
    AccountBalances,
    AccountClosed,
    AccountError,
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
)
from eventsource.events import DomainEvent
from eventsource.exceptions import EventSourceError
from eventsource.repositories import InMemoryCheckpointRepository
from eventsource.stores import EventStore, Position, ReadOptions
from eventsource.subscriptions import Subscription, SubscriptionConfig, SubscriptionManager

__all__ = ["BURST", "DEFAULT_URL", "add_parser", "run", "run_scenario"]

DEFAULT_URL = "sqlite:///eventsource-demo.db"
BURST = 20
"""How many deposits the scenario sends to one account at the same time."""
BURST_AMOUNT = Decimal("5.00")
CATCH_UP_TIMEOUT = 30.0
"""Seconds to wait for the read model to reach a position; reached within milliseconds
unless the subscription is broken, which then shows as a `TimeoutError`."""

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
        # The checkpoint lives in memory like the read model, so every run rebuilds the read
        # model from the start of the feed: a kept checkpoint with a lost model would skip.
        config = SubscriptionConfig(poll_interval=0.05)
        async with SubscriptionManager(
            store, InMemoryCheckpointRepository(), config=config
        ) as manager:
            balances = AccountBalances()
            view = _ReadModel(manager.subscribe(balances), balances)
            await view.start(say, before, last_before)
            say("")
            # One stream takes one writer at a time: each of the BURST concurrent commands
            # can lose the race at most BURST - 1 times (once per other writer's commit), so
            # this many retries always suffices, whatever the timing (the default is 10).
            repo = AggregateRepository(store, Account, max_retries=BURST)
            alice, bob = await _act(repo, say, view)
            say("")
            await _report(repo, say, view, alice, bob)
        say("")
        await _feed_summary(store, say, {alice, bob}, before, last_before)
        if opened.start_over:
            say(f"Run the demo again to add to this store, or {opened.start_over} to start over.")


class _ReadModel:
    """The read model as the demo shows it: the subscription that feeds `AccountBalances`."""

    def __init__(self, subscription: Subscription, balances: AccountBalances) -> None:
        self.subscription = subscription
        self.balances = balances

    async def start(self, say: Say, before: int, last_before: Position | None) -> None:
        say("read model: balances, kept by a subscription that follows the global feed")
        say('  (a position like 0-7 is an event\'s place in that feed; "at 0-7": applied up to it)')
        if last_before is None:
            say("  subscription started on an empty feed, now live")
            return
        await self.subscription.wait_for(last_before, timeout=CATCH_UP_TIMEOUT)
        say(f"  subscription caught up on the {before} earlier events (to {last_before}), now live")

    async def at(self, position: Position | None, *accounts: UUID, since: int | None = None) -> str:
        """Wait until the read model has applied `position`, then show the accounts; with
        `since` (`applied` before the commands), also how many of their events it applied
        while they ran and how many after they returned."""
        during = None if since is None else self.balances.applied - since
        await self.subscription.wait_for(position, timeout=CATCH_UP_TIMEOUT)
        rows = [self.balances.accounts[account] for account in accounts]
        shown = ", ".join(
            f"{row.owner} {row.balance:.2f}{' closed' if row.closed else ''}" for row in rows
        )
        if since is not None and during is not None:
            after = self.balances.applied - since - during
            shown += f" ({during} applied while the deposits ran, {after} after)"
        return f"    read model at {position}: {shown}"


async def _act(repo: AggregateRepository[Account], say: Say, view: _ReadModel) -> tuple[UUID, UUID]:
    """The commands of the scenario; returns the ids of Alice's and Bob's accounts."""
    alice, bob = uuid4(), uuid4()
    await repo.execute(alice, lambda a: a.open("Alice"), create=True)
    done = await repo.execute_command(alice, lambda a: a.deposit(Decimal("100.00")))
    say(f" 1. Alice opens account {_short(alice)} and deposits 100.00")
    say(await view.at(done.position, alice))
    await repo.execute(bob, lambda a: a.open("Bob", overdraft_limit=Decimal("50.00")), create=True)
    done = await repo.execute_command(bob, lambda a: a.deposit(Decimal("20.00")))
    say(f" 2. Bob opens account {_short(bob)} (overdraft limit 50.00) and deposits 20.00")
    say(await view.at(done.position, alice, bob))

    await repo.execute(alice, lambda a: a.withdraw(Decimal("30.00")))
    done = await repo.execute_command(bob, lambda a: a.deposit(Decimal("30.00")))
    say(" 3. Alice sends Bob 30.00: a withdrawal from her stream, then a deposit to his")
    say(await view.at(done.position, alice, bob))

    say(" 4. Bob tries to withdraw 200.00")
    await _refused(say, repo.execute(bob, lambda a: a.withdraw(Decimal("200.00"))))

    applied = view.balances.applied
    attempts, last = await _burst(repo, alice)
    say(f" 5. {BURST} deposits of {BURST_AMOUNT} reach Alice's account at the same time")
    say(
        f"    all {BURST} saved; {attempts - BURST} times a deposit found the account changed "
        "under it, reloaded and retried"
    )
    say(await view.at(last, alice, bob, since=applied))

    await repo.execute(bob, lambda a: a.withdraw(Decimal("50.00")))
    done = await repo.execute_command(bob, lambda a: a.close())
    say(" 6. Bob withdraws 50.00, closes his account, then tries to deposit 10.00")
    await _refused(say, repo.execute(bob, lambda a: a.deposit(Decimal("10.00"))))
    say(await view.at(done.position, alice, bob))
    return alice, bob


async def _refused(say: Say, command: Awaitable[object]) -> None:
    """Await a command that a business rule should refuse, and report the refusal."""
    try:
        await command
    except AccountError as exc:
        say(f"    refused ({type(exc).__name__}): {exc.reason}")
    else:  # pragma: no cover - the scenario is built so that this cannot happen
        raise AssertionError("the command should have been refused")


async def _burst(repo: AggregateRepository[Account], account_id: UUID) -> tuple[int, Position]:
    """Run BURST concurrent deposits on one account; returns how many attempts they took and
    the position of the last deposit stored."""
    attempts = 0

    async def deposit(account: Account) -> None:
        nonlocal attempts
        attempts += 1
        # Stands in for I/O a real command awaits between load and save (a fraud check,
        # say): it lets the other deposits load the same version in the meantime.
        await asyncio.sleep(0)
        account.deposit(BURST_AMOUNT)

    results = await asyncio.gather(
        *(repo.execute_command(account_id, deposit) for _ in range(BURST))
    )
    return attempts, max(r.position for r in results if r.position is not None)


async def _report(
    repo: AggregateRepository[Account], say: Say, view: _ReadModel, alice: UUID, bob: UUID
) -> None:
    say("Balances, rebuilt from the stored events:")
    differ = []
    for account_id in (alice, bob):
        account = await repo.load(account_id)
        state = account.state
        status = "closed" if state.closed else "open"
        say(
            f"  {state.owner:<6} {_short(account_id)}  {state.balance:>7.2f}  {status:<6}"
            f"  version {account.version}"
        )
        row = view.balances.accounts[account_id]
        if (row.balance, row.closed, row.version) != (state.balance, state.closed, account.version):
            differ.append(state.owner)
    say(
        "  the read model differs for " + ", ".join(differ)
        if differ
        else "  the read model, fed by the subscription, shows the same"
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
