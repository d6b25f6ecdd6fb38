"""RedisEventBus against raw redis-py doing the same work on the same Redis, in the same run.

    uv run python benchmarks/bus_redis.py            # all workloads
    uv run python benchmarks/bus_redis.py --quick    # smaller sizes

1. Publish in batches of 100: the library's `publish` (pydantic events, `_wire.encode`) against
   raw redis-py building the same JSON bodies with json.dumps and the same header fields, one
   pipelined XADD per event, one round trip per batch.
2. Publish one event per call: the same, one XADD per call.
3. End to end: N events published in batches of 100 while one consumer of a fresh group
   handles them; time from the first publish to the last event handled. Raw: an XREADGROUP
   loop (COUNT 32, BLOCK) that json.loads each body and XACKs each entry once handled, as the
   library does.

Ratios are library / raw throughput, median of interleaved repeats. Environment:
EVENTSOURCE_BENCH_REDIS_URL (default redis://127.0.0.1:6379/0). Every run uses its own key
prefix and deletes its keys at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import redis.asyncio as aioredis
from _common import Incremented, Result, interleave, registry

from eventsource._internal.ids import uuid7
from eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
from eventsource.events.base import DomainEvent

URL = os.environ.get("EVENTSOURCE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NOTE = Incremented.model_fields["note"].default
BATCH = 32


def raw_message(amount: int) -> dict[str, Any]:
    """The fields the library writes for one `Incremented`, built by hand."""
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
    return {
        "body": json.dumps(body),
        "event-type": "Incremented",
        "event-version": "1",
        "event-id": str(event_id),
        "aggregate-id": str(aggregate_id),
        "aggregate-type": "Counter",
        "aggregate-version": "1",
        "correlation-id": str(event_id),
        "content-type": "application/json",
    }


def lib_events(count: int) -> list[DomainEvent]:
    return [Incremented(amount=n).attached(uuid4(), "Counter", 1) for n in range(count)]


class Raw:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client, self.key = client, f"{prefix}:events"

    async def publish(self, count: int) -> None:
        if count == 1:
            await self.client.xadd(self.key, raw_message(0))
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for n in range(count):
                pipe.xadd(self.key, raw_message(n))
            await pipe.execute()

    async def consume(self, group: str, expected: int) -> int:
        total = handled = 0
        while handled < expected:
            response = await self.client.xreadgroup(
                group, "raw", {self.key: ">"}, count=BATCH, block=2000
            )
            for _, entries in response or ():
                for entry_id, fields in entries:
                    total += json.loads(fields[b"body"])["amount"]
                    await self.client.xack(self.key, group, entry_id)
                    handled += 1
        return total


async def publish_rate(publish: Callable[[int], Awaitable[None]], calls: int, size: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await publish(size)
    return calls * size / (time.perf_counter() - start)


async def main(quick: bool) -> int:
    scale = 10 if quick else 1
    repeats = 3 if quick else 5
    prefix = f"eventsource-bench-{os.getpid()}"
    client = aioredis.Redis.from_url(URL, protocol=2)
    raw = Raw(client, prefix)
    config = RedisEventBusConfig(url=URL, stream_prefix=prefix, batch_size=BATCH)
    publisher = RedisEventBus(config, registry=registry)
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
            consumer = RedisEventBus(
                RedisEventBusConfig(
                    url=URL, stream_prefix=prefix, consumer_group=group, batch_size=BATCH
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
            await asyncio.wait_for(done.wait(), 60)
            elapsed = time.perf_counter() - start
            await consumer.shutdown()
            return events / elapsed

        async def raw_end_to_end() -> float:
            group = f"raw-{uuid4().hex[:8]}"
            await client.xgroup_create(raw.key, group, "$", mkstream=True)
            start = time.perf_counter()
            consuming = asyncio.create_task(raw.consume(group, events))
            for _ in range(events // 100):
                await raw.publish(100)
            await asyncio.wait_for(consuming, 60)
            return events / (time.perf_counter() - start)

        lib_rate, raw_rate = await interleave(repeats, lib_end_to_end, raw_end_to_end)
        results.append(
            Result(f"end to end, {events:,} events, 1 consumer", "events/s", lib_rate, raw_rate, "")
        )
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await publisher.close()
        await client.aclose()

    print(f"RedisEventBus vs raw redis-py (median of {repeats} interleaved runs)\n")
    print("| workload | library | raw redis-py | ratio |")
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
