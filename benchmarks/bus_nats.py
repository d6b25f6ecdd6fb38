"""NATSEventBus against raw nats-py JetStream doing the same work on the same server, in the
same run.

    uv run python benchmarks/bus_nats.py            # all workloads
    uv run python benchmarks/bus_nats.py --quick    # smaller sizes

1. Publish in batches of 100: the library's `publish` (pydantic events, `_wire.encode`, one
   subject per aggregate, `Nats-Msg-Id`) against raw nats-py building the same JSON bodies
   with json.dumps and the same headers, `publish_async` for each message then waiting for
   every acknowledgement: one pipelined round trip per batch, as the library does.
2. Publish one event per call: the same, `js.publish` per call (one round trip each).
3. End to end: N events published in batches of 100 while one consumer of a fresh durable
   pull consumer handles them; time from the first publish to the last event handled. Raw: a
   fetch loop (batch 32) that json.loads each body and acknowledges each message once handled.

Ratios are library / raw throughput, median of interleaved repeats; the load average is
printed with them. Environment: EVENTSOURCE_BENCH_NATS_URL (default nats://127.0.0.1:4222).
Every run uses its own subject prefix and deletes its streams at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import nats
from _common import Incremented, Result, interleave, registry
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from eventsource._internal.ids import uuid7
from eventsource.bus.nats import NATSEventBus, NATSEventBusConfig, subject_token
from eventsource.events.base import DomainEvent

URL = os.environ.get("EVENTSOURCE_BENCH_NATS_URL", "nats://127.0.0.1:4222")
NOTE = Incremented.model_fields["note"].default
BATCH = 32


def raw_message(prefix: str, amount: int) -> tuple[str, bytes, dict[str, str]]:
    """Subject, body and headers the library writes for one `Incremented`, built by hand."""
    event_id, aggregate_id, now = uuid7(), uuid4(), datetime.now(UTC).isoformat()
    body = {
        "event_id": str(event_id),
        "event_type": "Incremented",
        "event_version": 1,
        "aggregate_id": str(aggregate_id),
        "aggregate_type": "Counter",
        "aggregate_version": 1,
        "occurred_at": now,
        "tenant_id": None,
        "correlation_id": str(event_id),
        "causation_id": None,
        "metadata": {},
        "amount": amount,
        "note": NOTE,
    }
    headers = {
        "event-type": "Incremented",
        "event-version": "1",
        "event-id": str(event_id),
        "aggregate-id": str(aggregate_id),
        "aggregate-type": "Counter",
        "aggregate-version": "1",
        "correlation-id": str(event_id),
        "content-type": "application/json",
        "Nats-Msg-Id": str(event_id),
    }
    return f"{prefix}.Counter.{aggregate_id}", json.dumps(body).encode(), headers


def lib_events(count: int) -> list[DomainEvent]:
    return [Incremented(amount=n).attached(uuid4(), "Counter", 1) for n in range(count)]


class Raw:
    def __init__(self, js: JetStreamContext, prefix: str, stream: str) -> None:
        self.js, self.prefix, self.stream = js, prefix, stream

    async def publish(self, count: int) -> None:
        if count == 1:
            subject, body, headers = raw_message(self.prefix, 0)
            await self.js.publish(subject, body, headers=headers)
            return
        futures = []
        for n in range(count):
            subject, body, headers = raw_message(self.prefix, n)
            futures.append(await self.js.publish_async(subject, body, headers=headers))
        await asyncio.gather(*futures)

    async def consume(self, durable: str, expected: int) -> int:
        config = api.ConsumerConfig(
            durable_name=durable,
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=30,
        )
        sub = await self.js.pull_subscribe(
            f"{self.prefix}.*.*", durable=durable, stream=self.stream, config=config
        )
        self.ready.set()
        total = handled = 0
        while handled < expected:
            try:
                batch = await sub.fetch(BATCH, timeout=2)
            except TimeoutError:
                continue
            for msg in batch:
                total += json.loads(msg.data)["amount"]
                await msg.ack()
                handled += 1
        await sub.unsubscribe()
        return total

    ready: asyncio.Event


async def publish_rate(publish: Callable[[int], Awaitable[None]], calls: int, size: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await publish(size)
    return calls * size / (time.perf_counter() - start)


async def main(quick: bool) -> int:
    scale = 10 if quick else 1
    repeats = 3 if quick else 5
    prefix = f"eventsource-bench-{os.getpid()}"
    config = NATSEventBusConfig(url=URL, subject_prefix=prefix, batch_size=BATCH)
    publisher = NATSEventBus(config, registry=registry)
    await publisher.publish(lib_events(1))  # makes the streams
    client = await nats.connect(URL)
    raw = Raw(client.jetstream(), prefix, publisher.stream)
    results: list[Result] = []

    async def lib_publish(size: int) -> None:
        await publisher.publish(lib_events(size))

    try:
        for name, calls, size in (
            ("publish, batches of 100", 100 // scale, 100),
            ("publish, one event per call", 1000 // scale, 1),
        ):
            lib_rate, raw_rate = await interleave(
                repeats,
                lambda c=calls, s=size: publish_rate(lib_publish, c, s),
                lambda c=calls, s=size: publish_rate(raw.publish, c, s),
            )
            results.append(Result(name, "events/s", lib_rate, raw_rate, ""))

        events = 4000 // scale

        async def lib_end_to_end() -> float:
            group = f"lib-{uuid4().hex[:8]}"
            consumer = NATSEventBus(
                NATSEventBusConfig(
                    url=URL, subject_prefix=prefix, consumer_group=group, batch_size=BATCH
                ),
                registry=registry,
            )
            done = asyncio.Event()
            seen = 0

            def count(event: DomainEvent) -> None:
                nonlocal seen
                seen += 1
                if seen == events:
                    done.set()

            consumer.subscribe(Incremented, count)
            await consumer.start_consuming()
            start = time.perf_counter()
            for _ in range(events // 100):
                await publisher.publish(lib_events(100))
            await asyncio.wait_for(done.wait(), 120)
            elapsed = time.perf_counter() - start
            await consumer.shutdown()
            return events / elapsed

        async def raw_end_to_end() -> float:
            raw.ready = asyncio.Event()
            consuming = asyncio.create_task(raw.consume(f"raw-{uuid4().hex[:8]}", events))
            await raw.ready.wait()
            start = time.perf_counter()
            for _ in range(events // 100):
                await raw.publish(100)
            await asyncio.wait_for(consuming, 120)
            return events / (time.perf_counter() - start)

        lib_rate, raw_rate = await interleave(repeats, lib_end_to_end, raw_end_to_end)
        results.append(
            Result(f"end to end, {events:,} events, 1 consumer", "events/s", lib_rate, raw_rate, "")
        )
    finally:
        js: Any = client.jetstream()
        for stream in (publisher.stream, publisher.groups_stream, subject_token(prefix)):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
        await publisher.close()
        await client.close()

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"NATSEventBus vs raw nats-py JetStream (median of {repeats} interleaved runs)")
    print(f"load average (1, 5, 15 min) at the end: {load} on {os.cpu_count()} CPUs\n")
    print("| workload | library | raw nats-py | ratio |")
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
