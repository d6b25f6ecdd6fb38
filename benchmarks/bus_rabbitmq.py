"""RabbitMQEventBus against raw aio-pika doing the same work, in the same run.

    uv run python benchmarks/bus_rabbitmq.py            # all workloads
    uv run python benchmarks/bus_rabbitmq.py --quick    # smaller sizes, for a smoke run

The raw side is what a careful hand-written aio-pika program would do: a robust connection for
publishing and one for consuming, a durable topic exchange, persistent messages with the same
routing key, body size and header names and sizes, publisher confirms, a batch published
concurrently and all its confirms awaited; its consumer acknowledges each message by hand after
json.loads of the body, one message at a time, with the library's prefetch count. The library
side goes through the public API with pydantic events. Each side has its own exchange and
queues; messages are routed to one durable queue in every workload. Ratios are library / raw
throughput, median of interleaved repeats.

Environment: EVENTSOURCE_BENCH_RABBITMQ_URL (default amqp://guest:guest@127.0.0.1:5672/).
Every run declares its own exchanges and queues and deletes them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from uuid import uuid4

import aio_pika
from _common import Incremented, Result, interleave, registry

from eventsource.bus.rabbitmq import RabbitMQEventBus, RabbitMQEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec

URL = os.environ.get("EVENTSOURCE_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
PREFIX = f"eventsource-bench-{os.getpid()}"
ROUTING_KEY = "Counter.Incremented"


def events(count: int) -> list[DomainEvent]:
    aggregate = uuid4()
    return [Incremented(amount=n).attached(aggregate, "Counter", n + 1) for n in range(count)]


class Raw:
    """Hand-written aio-pika: the same exchange, messages, confirms and acknowledgements."""

    def __init__(self, exchange: aio_pika.abc.AbstractExchange) -> None:
        self.exchange = exchange
        sample = events(1)[0]
        self.fields = json.loads(EventCodec.encode(sample))  # the same JSON shape and size

    def message(self, amount: int, version: int) -> aio_pika.Message:
        event_id, aggregate_id = str(uuid4()), str(uuid4())
        body = json.dumps(
            {
                **self.fields,
                "event_id": event_id,
                "aggregate_id": aggregate_id,
                "aggregate_version": version,
                "correlation_id": event_id,
                "amount": amount,
            }
        ).encode()
        headers = {
            "event-type": "Incremented",
            "event-version": "1",
            "event-id": event_id,
            "aggregate-id": aggregate_id,
            "aggregate-type": "Counter",
            "aggregate-version": str(version),
            "correlation-id": event_id,
            "content-type": "application/json",
        }
        return aio_pika.Message(
            body,
            headers=dict(headers),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event_id,
        )

    async def publish(self, amounts: range) -> None:
        messages = [self.message(n, n + 1) for n in amounts]
        await asyncio.gather(
            *(self.exchange.publish(m, ROUTING_KEY, mandatory=False) for m in messages)
        )


async def rate(count: int, work: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await work()
    return count / (time.perf_counter() - start)


async def main(quick: bool) -> int:
    scale = 5 if quick else 1
    repeats = 3 if quick else 5
    batches, singles, delivered = 30 // scale, 500 // scale, 2000 // scale
    connection = await aio_pika.connect_robust(URL)
    consumer_connection = await aio_pika.connect_robust(URL)
    channel = await connection.channel(publisher_confirms=True)
    buses: list[RabbitMQEventBus] = []
    queues: list[str] = []
    results: list[Result] = []

    def bus(name: str, group: str = "sink") -> RabbitMQEventBus:
        config = RabbitMQEventBusConfig(url=URL, exchange=f"{PREFIX}-{name}", consumer_group=group)
        buses.append(RabbitMQEventBus(config, registry=registry))
        queues.extend(buses[-1].queue_names)
        return buses[-1]

    async def exchange_with_sink(name: str) -> aio_pika.abc.AbstractQueue:
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        sink = await channel.declare_queue(f"{name}.sink", durable=True)
        await sink.bind(exchange, "#")
        queues.append(sink.name)
        return sink

    try:
        # 1-2. publish throughput: confirmed, persistent, routed to one durable queue
        lib = bus("lib")
        lib_sink = await exchange_with_sink(f"{PREFIX}-lib")
        raw_sink = await exchange_with_sink(f"{PREFIX}-raw")
        raw = Raw(await channel.get_exchange(f"{PREFIX}-raw"))

        async def lib_batches() -> float:
            data = events(batches * 100)
            chunks = [data[n : n + 100] for n in range(0, len(data), 100)]

            async def work() -> None:
                for chunk in chunks:
                    await lib.publish(chunk)

            return await rate(len(data), work)

        async def raw_batches() -> float:
            async def work() -> None:
                for n in range(batches):
                    await raw.publish(range(n * 100, n * 100 + 100))

            return await rate(batches * 100, work)

        async def lib_singles() -> float:
            data = events(singles)

            async def work() -> None:
                for event in data:
                    await lib.publish([event])

            return await rate(singles, work)

        async def raw_singles() -> float:
            async def work() -> None:
                for n in range(singles):
                    await raw.exchange.publish(raw.message(n, n + 1), ROUTING_KEY, mandatory=False)

            return await rate(singles, work)

        async def purged(side: Callable[[], Awaitable[float]]) -> float:
            value = await side()
            await lib_sink.purge()
            await raw_sink.purge()
            return value

        for name, lib_side, raw_side in (
            ("publish, batches of 100", lib_batches, raw_batches),
            ("publish, one event per call", lib_singles, raw_singles),
        ):
            lib_rate, raw_rate = await interleave(
                repeats, partial(purged, lib_side), partial(purged, raw_side)
            )
            results.append(Result(name, "events/s", lib_rate, raw_rate, ""))

        # 3. end to end: publish N in batches of 100, until one consumer handled all N
        lib_consumer, lib_publisher = bus("e2e-lib", "consumers"), bus("e2e-lib", "publisher")
        handled, goal, done = [0], [0], asyncio.Event()

        def count(event: DomainEvent) -> None:
            handled[0] += 1
            if handled[0] >= goal[0]:
                done.set()

        lib_consumer.subscribe(Incremented, count)
        await lib_consumer.start_consuming()

        consumer_channel = await consumer_connection.channel()
        await consumer_channel.set_qos(prefetch_count=lib_consumer.config.prefetch_count)
        raw_exchange = await channel.declare_exchange(
            f"{PREFIX}-e2e-raw", aio_pika.ExchangeType.TOPIC, durable=True
        )
        raw_queue = await consumer_channel.declare_queue(
            f"{PREFIX}-e2e-raw.consumers", durable=True
        )
        queues.append(raw_queue.name)
        await raw_queue.bind(raw_exchange.name, "#.Incremented")
        raw_e2e = Raw(raw_exchange)

        async def raw_consume() -> None:
            async with raw_queue.iterator() as messages:
                async for message in messages:
                    json.loads(message.body)
                    await message.ack()
                    handled[0] += 1
                    if handled[0] >= goal[0]:
                        done.set()

        raw_consumer = asyncio.create_task(raw_consume())

        async def end_to_end(publish: Callable[[int], Awaitable[None]]) -> float:
            handled[0], goal[0] = 0, delivered
            done.clear()

            async def work() -> None:
                for n in range(0, delivered, 100):
                    await publish(n)
                await done.wait()

            return await rate(delivered, work)

        e2e_events: list[DomainEvent] = []

        async def lib_e2e() -> float:
            e2e_events[:] = events(delivered)
            return await end_to_end(lambda n: lib_publisher.publish(e2e_events[n : n + 100]))

        async def raw_e2e_run() -> float:
            return await end_to_end(lambda n: raw_e2e.publish(range(n, n + 100)))

        lib_rate, raw_rate = await interleave(repeats, lib_e2e, raw_e2e_run)
        results.append(
            Result(f"end to end, {delivered:,} events", "events/s", lib_rate, raw_rate, "")
        )
        raw_consumer.cancel()
        await asyncio.gather(raw_consumer, return_exceptions=True)
    finally:
        for made in buses:
            await made.shutdown(timeout=5)
        cleanup = await connection.channel()
        for queue in dict.fromkeys(queues):
            await cleanup.queue_delete(queue)
        for name in ("lib", "raw", "e2e-lib", "e2e-raw"):
            await cleanup.exchange_delete(f"{PREFIX}-{name}")
        await consumer_connection.close()
        await connection.close()

    print(f"RabbitMQEventBus vs raw aio-pika (median of {repeats} interleaved runs)\n")
    print("| workload | library | raw aio-pika | ratio |")
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r.name} | {r.lib:,.0f} {r.unit} | {r.raw:,.0f} {r.unit} | {r.lib / r.raw:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
