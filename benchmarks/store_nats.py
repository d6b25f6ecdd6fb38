"""NATSEventStore against raw nats-py doing the same work on the same server, in the same run.

    uv run python benchmarks/store_nats.py            # all workloads
    uv run python benchmarks/store_nats.py --quick    # smaller sizes

1. Append with expected sequence: one event per append, 10 appends per stream, one writer.
   Library: `append_events` with the exact expected version. Raw: the same two round trips
   (a direct get of the subject's last message for its sequence and version, then a publish
   of the JSON event with `Nats-Expected-Last-Subject-Sequence` and `Nats-Msg-Id`).
2. Read a subject: a stream of 100 one-event appends read whole. Library: `read_stream`,
   events decoded. Raw: an ephemeral pull consumer on the subject, fetched in one batch,
   each body `json.loads`-ed.
3. Catch-up of the stream: the whole store read from the start. Library: `read_all`, events
   decoded. Raw: an ephemeral pull consumer on `<prefix>.>`, fetched in batches of 1,000,
   bodies `json.loads`-ed.

Ratios are library / raw throughput, median of interleaved repeats; the machine's load
average is printed with them. Environment: EVENTSOURCE_BENCH_NATS_URL (default
nats://127.0.0.1:4222). Every run uses streams of its own and deletes them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

import nats
from _common import Incremented, interleave, registry
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from eventsource import NATSEventStore

URL = os.environ.get("EVENTSOURCE_BENCH_NATS_URL", "nats://127.0.0.1:4222")


class Raw:
    """Hand-written nats-py on a stream of its own."""

    def __init__(self, client: Client, stream: str) -> None:
        self.client = client
        self.js = client.jetstream()
        self.stream = stream

    async def create(self) -> None:
        await self.js.add_stream(
            StreamConfig(name=self.stream, subjects=[f"{self.stream}.>"], allow_direct=True)
        )

    async def append(self, aggregate_id: UUID, amount: int) -> None:
        subject = f"{self.stream}.Counter.{aggregate_id}"
        reply = await self.client.request(
            f"$JS.API.DIRECT.GET.{self.stream}",
            json.dumps({"last_by_subj": subject}).encode(),
        )
        headers = reply.headers or {}
        if headers.get("Status") == "404":
            seq, version = 0, 0
        else:
            seq, version = int(headers["Nats-Sequence"]), int(headers["Version"])
        event_id = str(uuid4())
        body = json.dumps(
            {"event_id": event_id, "version": version + 1, "amount": amount, "note": "x" * 60}
        ).encode()
        await self.js.publish(
            subject,
            body,
            headers={
                "Nats-Expected-Last-Subject-Sequence": str(seq),
                "Nats-Msg-Id": event_id,
                "Version": str(version + 1),
            },
        )

    async def read(self, subject: str, batch: int) -> int:
        sub = await self.js.pull_subscribe(
            subject,
            stream=self.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, mem_storage=True
            ),
        )
        total = 0
        try:
            pending = (await sub.consumer_info()).num_pending
            while pending > 0:
                messages = await sub.fetch(min(batch, pending), timeout=5)
                for message in messages:
                    total += json.loads(message.data)["amount"]
                    pending = message.metadata.num_pending
        finally:
            await sub.unsubscribe()
        return total


async def rate(count: int, work: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await work()
    return count / (time.perf_counter() - start)


async def main(quick: bool) -> None:
    repeats = 3 if quick else 7
    streams_n = 20 if quick else 50
    feed_n = 2_000 if quick else 10_000
    run = uuid4().hex[:8]
    lib_name, raw_name = f"bench_lib_{run}", f"bench_raw_{run}"
    client = await nats.connect(URL)
    raw = Raw(client, raw_name)
    await raw.create()
    store = NATSEventStore(URL, stream=lib_name, registry=registry)
    results: list[tuple[str, float, float]] = []
    try:
        await store.connect()

        async def lib_appends() -> float:
            ids = [uuid4() for _ in range(streams_n)]

            async def work() -> None:
                for version in range(10):
                    for aggregate in ids:
                        event = Incremented(amount=1)
                        await store.append_events(aggregate, "Counter", [event], version)

            return await rate(streams_n * 10, work)

        async def raw_appends() -> float:
            ids = [uuid4() for _ in range(streams_n)]

            async def work() -> None:
                for _ in range(10):
                    for aggregate in ids:
                        await raw.append(aggregate, 1)

            return await rate(streams_n * 10, work)

        lib_rate, raw_rate = await interleave(repeats, lib_appends, raw_appends)
        results.append(("append, expected sequence, 1 event", lib_rate, raw_rate))

        lib_stream, raw_stream = uuid4(), uuid4()
        for version in range(100):
            await store.append_events(lib_stream, "Counter", [Incremented(amount=1)], version)
            await raw.append(raw_stream, 1)

        async def lib_read_subject() -> float:
            async def work() -> None:
                events = [s.event async for s in store.read_stream(lib_stream)]
                assert len(events) == 100

            return await rate(100, work)

        async def raw_read_subject() -> float:
            async def work() -> None:
                assert await raw.read(f"{raw_name}.Counter.{raw_stream}", 1000) == 100

            return await rate(100, work)

        lib_rate, raw_rate = await interleave(repeats, lib_read_subject, raw_read_subject)
        results.append(("read a subject, 100 events", lib_rate, raw_rate))

        filler = feed_n - (streams_n * 10 * repeats + 100)
        for _ in range(max(filler, 0)):
            aggregate = uuid4()
            await store.append_events(aggregate, "Counter", [Incremented(amount=1)], 0)
            await raw.append(aggregate, 1)
        total = await store.count_events()

        async def lib_catch_up() -> float:
            async def work() -> None:
                count = 0
                async for stored in store.read_all():
                    stored.event  # noqa: B018 - decoded, as a projection would
                    count += 1
                assert count == total

            return await rate(total, work)

        async def raw_catch_up() -> float:
            async def work() -> None:
                await raw.read(f"{raw_name}.>", 1000)

            return await rate(total, work)

        lib_rate, raw_rate = await interleave(repeats, lib_catch_up, raw_catch_up)
        results.append((f"catch-up of the stream, {total:,} events", lib_rate, raw_rate))
    finally:
        await store.close()
        for name in (lib_name, raw_name):
            await client.jetstream().delete_stream(name)
        await client.close()

    load = os.getloadavg()
    print(f"NATSEventStore vs raw nats-py (median of {repeats} interleaved runs)")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs\n")
    print("| workload | library | raw nats-py | ratio |")
    print("|---|---|---|---|")
    for name, lib_value, raw_value in results:
        print(
            f"| {name} | {lib_value:,.0f} events/s | {raw_value:,.0f} events/s "
            f"| {lib_value / raw_value:.2f}x |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    asyncio.run(main(parser.parse_args().quick))
