"""The domain the fault tests run: accounts that take deposits, and a `DatabaseProjection`
whose every effect is counted by a non-idempotent write.

`Ledger` adds 1 to a single counter row per event (a repeated effect shows as a larger count,
which a row per event under a unique key would hide) and logs each application in `applied`
(no unique key) so the checks can say which event was applied twice, or out of order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventsource import DeclarativeAggregate, DomainEvent, EventRegistry, handles
from eventsource.projections import DatabaseProjection, TransactionalCheckpoints
from eventsource.subscriptions import SubscriptionConfig

registry = EventRegistry()

FAST = SubscriptionConfig(batch_size=50, poll_interval=0.05, retry_base=0.005, retry_cap=0.05)


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
    count: int, applied: Sequence[tuple[UUID, UUID, int]], stored: Sequence[tuple[UUID, UUID, int]]
) -> None:
    """Every stored event applied once (counter and log agree), each stream in version order."""
    ids = [event_id for event_id, _, _ in applied]
    repeated = {event_id for event_id in ids if ids.count(event_id) > 1}
    assert not repeated, f"{len(repeated)} events applied more than once"
    assert sorted(ids) == sorted(event_id for event_id, _, _ in stored)
    assert count == len(stored), f"{count} effects for {len(stored)} events"
    versions: dict[UUID, list[int]] = {}
    for _, aggregate_id, version in applied:
        versions.setdefault(aggregate_id, []).append(version)
    for aggregate_id, seen in versions.items():
        assert seen == sorted(seen), f"stream {aggregate_id} applied out of order: {seen}"
