"""An engine process of the PostgreSQL saga tests.

    python -m tests.sagas._worker POSTGRES_URL SCHEMA

Runs a `WorkflowEngine` on the schema's store, timers and advisory locks until SIGTERM
(printing `ready` once it runs), with a short lease so a killed worker's sagas are taken
over quickly.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
from datetime import timedelta

import asyncpg

from eventsource.locks.postgresql import PostgreSQLDistributedLock
from eventsource.sagas import PostgreSQLTimerStore, WorkflowEngine
from eventsource.stores.postgresql import PostgreSQLEventStore
from tests.sagas._sagas import Effects, sagas

LEASE = timedelta(seconds=2)


async def main(url: str, schema: str) -> None:
    store = PostgreSQLEventStore.from_url(url, schema=schema)
    timers = PostgreSQLTimerStore.for_store(store)
    locks = PostgreSQLDistributedLock.from_url(url, namespace=schema, pool_size=10)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=8)
    engine = WorkflowEngine(
        store,
        timers,
        sagas=sagas(Effects(pool, schema)),
        locks=locks,
        lease=LEASE,
        busy_retry=timedelta(milliseconds=200),
        poll_interval=0.1,
        compensation_backoff=timedelta(milliseconds=100),
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, engine.stop)
    loop.call_soon(functools.partial(print, "ready", flush=True))
    try:
        await engine.run()
    finally:
        await engine.close()
        await locks.close()
        await pool.close()
        await timers.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
