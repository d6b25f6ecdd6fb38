"""A worker process of the multi-process subscription test.

    python -m tests.subscriptions._worker POSTGRES_URL SCHEMA [record|partitioned|database|ledger]

Runs one subscription with PostgreSQL leases until SIGTERM (printing `ready` once it runs),
slowly, so that a kill lands in the middle of a batch. `record` (default): a plain handler
records (event id, process id, aggregate, n) in SCHEMA.handled, outside any transaction with
the checkpoint (at-least-once).
`partitioned`: the same handler on 4 partitions, at most 2 per process. `database`: a
`DatabaseProjection` adds each event's n to SCHEMA.totals in the transaction that moves its
checkpoint (exactly-once effect). `ledger`: `database`, and in the same transaction a row per
application in SCHEMA.handled (which events, in which order, by which process).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from eventsource import DomainEvent, EventRegistry, StoredEvent
from eventsource.projections import DatabaseProjection, handles
from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.subscriptions import CheckpointStrategy, SubscriptionConfig, SubscriptionManager
from eventsource.subscriptions.postgresql import PostgreSQLLeases

registry = EventRegistry()


class Tick(DomainEvent, registry=registry):
    n: int


class Totals(DatabaseProjection):
    schema = "public"

    @handles(Tick)
    async def _tick(self, connection: AsyncConnection, event: Tick) -> None:
        await connection.execute(
            text(
                f'UPDATE "{self.schema}".totals SET total = total + :n, applied = applied + 1'
                " FROM (SELECT pg_sleep(0.004)) AS slow"
            ),
            {"n": event.n},
        )


class LoggedTotals(Totals):
    """`Totals` that also logs each application, in the transaction of its effect."""

    @handles(Tick)
    async def _tick(self, connection: AsyncConnection, event: Tick) -> None:
        await super()._tick(connection, event)
        await connection.execute(
            text(
                f'INSERT INTO "{self.schema}".handled (event_id, pid, aggregate_id, n)'
                " VALUES (:e, :p, :a, :n)"
            ),
            {"e": event.event_id, "p": os.getpid(), "a": event.aggregate_id, "n": event.n},
        )


async def main(url: str, schema: str, mode: str) -> None:
    store = PostgreSQLEventStore.from_url(
        url,
        schema=schema,
        registry=registry,
        connect_args={"server_settings": {"application_name": f"worker-{os.getpid()}"}},
    )
    checkpoints = PostgreSQLCheckpointRepository(store.engine, schema=schema)
    # a pool: partitions run concurrently, and one asyncpg connection takes one query at a time
    results = await asyncpg.create_pool(url, min_size=1, max_size=4)

    async def record(stored: StoredEvent) -> None:
        assert isinstance(stored.event, Tick)
        await results.execute(
            f'INSERT INTO "{schema}".handled (event_id, pid, aggregate_id, n)'
            " VALUES ($1, $2, $3, $4)",
            stored.event_id,
            os.getpid(),
            stored.aggregate_id,
            stored.event.n,
        )
        await asyncio.sleep(0.004)

    config = SubscriptionConfig(
        batch_size=25, poll_interval=0.05, checkpoint=CheckpointStrategy.every_event()
    )
    manager = SubscriptionManager(
        store, checkpoints, config=config, leases=PostgreSQLLeases.for_store(store)
    )
    if mode == "partitioned":
        manager.subscribe_partitioned(record, 4, name="parts", per_process=2, takeover_after=15.0)
    elif mode in ("database", "ledger"):
        totals = (LoggedTotals if mode == "ledger" else Totals)(store.engine, checkpoints)
        totals.schema = schema
        manager.subscribe(totals)
    else:
        manager.subscribe(record, name="shared")
    # "ready" once the manager runs: this callback runs at its first await, after it installed
    # its SIGTERM handler (a SIGTERM sent on "ready" then always stops it gracefully)
    asyncio.get_running_loop().call_soon(functools.partial(print, "ready", flush=True))
    try:
        await manager.run_until_shutdown()
    finally:
        await results.close()
        await checkpoints.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "record"))
