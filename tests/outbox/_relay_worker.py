"""A relay process that dies (run by tests/outbox/test_relay_process.py and
tests/faults/test_process_kills.py).

    python -m tests.outbox._relay_worker KIND URL_OR_PATH SCHEMA BUS_URL PREFIX [MODE]

The bus is Redis (`redis://` BUS_URL; PREFIX is the stream prefix) or RabbitMQ (`amqp://`;
PREFIX is the exchange). MODE `die-after-publishing` (default): publish one outbox batch, then
SIGKILL itself before the batch is marked. MODE `handshake`: relay until killed; print `ready`
once started, and after each batch published (before it is marked) print `published N` and
wait for a line on stdin, so the test can SIGKILL it exactly between publish and mark. It
exits when stdin closes (its test is gone).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from eventsource.bus import EventBus
from eventsource.events.base import DomainEvent
from eventsource.outbox import OutboxRelay, OutboxRepository
from eventsource.testing import contract_registry


class DieAfterPublishing:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        await self.bus.publish(events)
        os.kill(os.getpid(), signal.SIGKILL)


class Handshake:
    """Publishes, says so on stdout, and returns (to the mark) when stdin says `go`."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.go: asyncio.Queue[None] = asyncio.Queue()

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        await self.bus.publish(events)
        print(f"published {len(events)}", flush=True)
        await self.go.get()

    async def read_stdin(self) -> None:
        while await asyncio.to_thread(sys.stdin.readline):
            self.go.put_nowait(None)
        os._exit(0)  # the test closed stdin or died: no orphan relay


def make_bus(url: str, prefix: str) -> EventBus:
    if url.startswith("amqp"):
        from eventsource.bus.rabbitmq import RabbitMQEventBus, RabbitMQEventBusConfig

        config = RabbitMQEventBusConfig(url=url, exchange=prefix, consumer_group="relay")
        return RabbitMQEventBus(config, registry=contract_registry)
    from eventsource.bus.redis import RedisEventBus, RedisEventBusConfig

    redis_config = RedisEventBusConfig(url=url, stream_prefix=prefix, consumer_group="relay")
    return RedisEventBus(redis_config, registry=contract_registry)


async def main(
    kind: str, where: str, schema: str, bus_url: str, prefix: str, mode: str = ""
) -> None:
    outbox: OutboxRepository
    if kind == "postgresql":
        from eventsource.outbox import PostgreSQLOutboxRepository

        outbox = PostgreSQLOutboxRepository.from_url(where, schema=schema, lease_seconds=1.0)
    else:
        from eventsource.outbox import SQLiteOutboxRepository

        outbox = SQLiteOutboxRepository(where, lease_seconds=1.0)
    bus = make_bus(bus_url, prefix)
    if mode == "handshake":
        handshake = Handshake(bus)
        reader = asyncio.create_task(handshake.read_stdin())
        relay = OutboxRelay(
            outbox,
            handshake,
            registry=contract_registry,
            batch_size=10,
            poll_interval=0.05,
            retry_delay=0.05,
            retry_delay_max=0.5,
        )
        print("ready", flush=True)
        await relay.run()
        reader.cancel()
        return
    relay = OutboxRelay(outbox, DieAfterPublishing(bus), registry=contract_registry)
    await relay.publish_pending()
    raise SystemExit("the relay should have died after publishing")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
