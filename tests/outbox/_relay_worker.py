"""A relay process that dies: it publishes one outbox batch to Redis, then SIGKILLs itself
before the batch is marked (run by tests/outbox/test_relay_process.py).

    python -m tests.outbox._relay_worker KIND URL_OR_PATH SCHEMA REDIS_URL PREFIX
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.outbox import OutboxRelay, OutboxRepository
from eventsource.testing import contract_registry


class DieAfterPublishing:
    def __init__(self, bus: RedisEventBus) -> None:
        self.bus = bus

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        await self.bus.publish(events)
        os.kill(os.getpid(), signal.SIGKILL)


async def main(kind: str, where: str, schema: str, redis_url: str, prefix: str) -> None:
    outbox: OutboxRepository
    if kind == "postgresql":
        from eventsource.outbox import PostgreSQLOutboxRepository

        outbox = PostgreSQLOutboxRepository.from_url(where, schema=schema, lease_seconds=1.0)
    else:
        from eventsource.outbox import SQLiteOutboxRepository

        outbox = SQLiteOutboxRepository(where, lease_seconds=1.0)
    bus = RedisEventBus(
        RedisEventBusConfig(url=redis_url, stream_prefix=prefix, consumer_group="relay"),
        registry=contract_registry,
    )
    relay = OutboxRelay(outbox, DieAfterPublishing(bus), registry=contract_registry)
    await relay.publish_pending()
    raise SystemExit("the relay should have died after publishing")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
