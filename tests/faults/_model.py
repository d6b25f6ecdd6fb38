"""The domain the fault tests run: accounts that take deposits, and a `DatabaseProjection`
whose every effect is counted by a non-idempotent write.

`Ledger` adds 1 to a single counter row per event (a repeated effect shows as a larger count,
which a row per event under a unique key would hide) and logs each application in `applied`
(no unique key) so the checks can say which event was applied twice, or out of order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventsource import DeclarativeAggregate, DomainEvent, EventRegistry, handles
from eventsource.projections import DatabaseProjection, TransactionalCheckpoints
from eventsource.stores.interface import Position
from eventsource.subscriptions import Subscription, SubscriptionConfig, SubscriptionState

registry = EventRegistry()

FAST = SubscriptionConfig(batch_size=50, poll_interval=0.05, retry_base=0.005, retry_cap=0.05)


CATCH_UP_SECONDS = 15.0
"""How long a subscription may take to catch up once the faults stop (a generous bound)."""


class Deposited(DomainEvent, registry=registry):
    amount: int


class AccountState(BaseModel):
    balance: int = 0


class Account(DeclarativeAggregate[AccountState]):
    aggregate_type = "Account"

    def deposit(self, amount: int) -> None:
        self.apply_event(Deposited(amount=amount))

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.state.balance += event.amount


def read_model_ddl(schema: str) -> list[str]:
    s = f'"{schema}"'
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"CREATE TABLE {s}.counter (n bigint NOT NULL)",
        f"INSERT INTO {s}.counter VALUES (0)",
        f"CREATE TABLE {s}.applied (id bigserial PRIMARY KEY, event_id uuid NOT NULL,"
        " aggregate_id uuid NOT NULL, version bigint NOT NULL)",
    ]


class Ledger(DatabaseProjection):
    def __init__(
        self, engine: AsyncEngine, checkpoints: TransactionalCheckpoints, schema: str
    ) -> None:
        super().__init__(engine, checkpoints)
        s = f'"{schema}"'
        self._bump = text(f"UPDATE {s}.counter SET n = n + 1")
        self._log = text(
            f"INSERT INTO {s}.applied (event_id, aggregate_id, version) VALUES (:e, :a, :v)"
        )

    @handles(Deposited)
    async def _deposited(self, connection: AsyncConnection, event: Deposited) -> None:
        await connection.execute(self._bump)
        await connection.execute(
            self._log,
            {"e": event.event_id, "a": event.aggregate_id, "v": event.aggregate_version},
        )


async def read_model(admin: Any, schema: str) -> tuple[int, list[tuple[UUID, UUID, int]]]:
    """The counter and the applications in the order they committed (by id)."""
    s = f'"{schema}"'
    count = int(await admin.fetchval(f"SELECT n FROM {s}.counter"))
    rows = await admin.fetch(f"SELECT event_id, aggregate_id, version FROM {s}.applied ORDER BY id")
    return count, [(UUID(str(r[0])), UUID(str(r[1])), int(r[2])) for r in rows]


def check_exactly_once_in_order(
    count: int, applied: Sequence[tuple[UUID, UUID, int]], stored: Sequence[Sequence[Any]]
) -> None:
    """Every stored event applied once (counter and log agree), each stream in version order."""
    ids = [event_id for event_id, _, _ in applied]
    repeated = {event_id for event_id in ids if ids.count(event_id) > 1}
    assert not repeated, f"{len(repeated)} events applied more than once"
    missing = {s[0] for s in stored} - set(ids)
    assert not missing, f"{len(missing)} stored events were never applied"
    assert sorted(ids) == sorted(s[0] for s in stored), "events applied that are not stored"
    assert count == len(stored), f"{count} effects for {len(stored)} events"
    versions: dict[UUID, list[int]] = {}
    for _, aggregate_id, version in applied:
        versions.setdefault(aggregate_id, []).append(version)
    for aggregate_id, seen in versions.items():
        assert seen == sorted(seen), f"stream {aggregate_id} applied out of order: {seen}"


RETRY_TIMEOUT = 15.0
"""The store's transient-retry budget in these tests (seconds): outlasts every fault injected
here on a loaded machine."""


Acked = tuple[UUID, UUID, int]
"""(event id, aggregate id, version) of an event whose append was acknowledged."""
Stored = tuple[UUID, UUID, int, Position]
"""(event id, aggregate id, version, position) of an event in the feed."""


async def feed(url: str, schema: str) -> list[Stored]:
    """The global feed in feed order, read by a store of its own (fresh connections: what the
    library's own connections went through does not matter here)."""
    from eventsource import PostgreSQLEventStore

    async with PostgreSQLEventStore.from_url(url, schema=schema, registry=registry) as store:
        return [
            (s.event_id, s.aggregate_id, s.event.aggregate_version, s.position)
            async for s in store.read_all()
        ]


def check_acked_equals_stored(acked: Sequence[Acked], stored: Sequence[Stored]) -> None:
    """Exactly the acknowledged events are stored (nothing lost, nothing extra), and the feed
    holds every stream in version order."""
    stored_ids = [s[0] for s in stored]
    assert len(stored_ids) == len(set(stored_ids)), "an event is in the feed twice"
    lost = {a[0] for a in acked} - set(stored_ids)
    extra = set(stored_ids) - {a[0] for a in acked}
    assert not lost, f"{len(lost)} acknowledged events are not stored"
    assert not extra, f"{len(extra)} stored events were never acknowledged"
    assert sorted(s[:3] for s in stored) == sorted(acked)
    versions: dict[UUID, list[int]] = {}
    for _, aggregate_id, version, _ in stored:
        versions.setdefault(aggregate_id, []).append(version)
    for aggregate_id, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), f"stream {aggregate_id} in the feed: {seen}"


async def caught_up(subscription: Subscription, position: Position | None) -> None:
    """Wait until `subscription` has processed `position`; fail at once, with its error, if it
    stopped (a consumer must survive infrastructure faults without a restart by hand)."""
    if position is None:
        return
    async with asyncio.timeout(CATCH_UP_SECONDS):
        while subscription.position is None or subscription.position < position:
            assert subscription.state is not SubscriptionState.FAILED, (
                f"subscription {subscription.name} stopped: {subscription.last_error}"
            )
            await asyncio.sleep(0.02)
