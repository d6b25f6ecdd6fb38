"""The cost of crypto-shredding: appending and reading events with personal fields through an
`EncryptedEventStore`, as a ratio to the same events without personal fields, in one run.

    uv run python benchmarks/gdpr.py            # 20,000 events per workload
    uv run python benchmarks/gdpr.py --quick    # 4,000 events, for a smoke run

Two event classes of the same shape (a subject id, an e-mail address and a name): `Plain`
and `Personal`, whose e-mail and name are `PersonalData`. Sides, each on a fresh PostgreSQL
schema, interleaved and repeated (median):
- plain: `Plain` events on `PostgreSQLEventStore` (today's path, the baseline);
- personal: `Personal` events on `EncryptedEventStore` over that store, keys in
  `PostgreSQLKeyStore` (100 subjects: after the first page every key is cached);
- plain, wrapped: `Plain` events through `EncryptedEventStore` (what the wrapper costs
  events without personal data).
Appends are batches of 10 events to new streams; reads are `read_all` of every event,
each decoded (and opened). Environment: EVENTSOURCE_BENCH_POSTGRES_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Annotated
from uuid import uuid4

import asyncpg
from _common import URL, load_average

from eventsource import DomainEvent, EventRegistry, EventStore, PostgreSQLEventStore
from eventsource.gdpr import EncryptedEventStore, PersonalData, PersonalDataVault
from eventsource.gdpr.postgresql import PostgreSQLKeyStore

registry = EventRegistry()
SUBJECTS = [f"customer-{n}" for n in range(100)]


class Plain(DomainEvent, registry=registry):
    customer_id: str
    email: str
    name: str


class Personal(DomainEvent, registry=registry):
    customer_id: str
    email: Annotated[str, PersonalData(subject="customer_id")]
    name: Annotated[str, PersonalData(subject="customer_id")]


def batch(cls: type[Plain] | type[Personal], n: int) -> list[DomainEvent]:
    subject = SUBJECTS[n % len(SUBJECTS)]
    return [
        cls(customer_id=subject, email=f"{subject}.{i}@example.org", name="Zoë Example")
        for i in range(10)
    ]


async def side(name: str, events: int, schema: str) -> tuple[float, float]:
    """(appends/s, reads/s) in events per second for one side on its own schema."""
    inner = PostgreSQLEventStore.from_url(URL, schema=schema, registry=registry)
    await inner.create_schema()
    keys = PostgreSQLKeyStore(inner.engine, schema=schema)
    store: EventStore = inner
    cls: type[Plain] | type[Personal] = Plain
    if name != "plain":
        store = EncryptedEventStore(inner, PersonalDataVault(keys), registry=registry)
    if name == "personal":
        cls = Personal
    try:
        batches = [batch(cls, n) for n in range(events // 10)]
        start = time.perf_counter()
        for events_of in batches:
            await store.append_events(uuid4(), "Customer", events_of, 0)
        appends = events / (time.perf_counter() - start)
        start = time.perf_counter()
        read = 0
        async for stored in store.read_all():
            assert stored.event.email
            read += 1
        reads = read / (time.perf_counter() - start)
        assert read == events
        return appends, reads
    finally:
        await keys.close()
        await inner.close()


async def drop(schema: str) -> None:
    conn = await asyncpg.connect(URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    events = 4000 if args.quick else 20000
    repeats = 3
    names = ["plain", "personal", "plain, wrapped"]
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    print(f"load before: {load_average()}")
    for r in range(repeats):
        for name in names[r % 3 :] + names[: r % 3]:
            schema = f"bench_gdpr_{uuid4().hex[:10]}"
            try:
                results[name].append(await side(name, events, schema))
            finally:
                await drop(schema)
    print(f"load after:  {load_average()}")
    print(f"\n{events:,} events per side, median of {repeats} interleaved runs\n")
    print("| side | append events/s | read events/s | append ratio | read ratio |")
    print("|---|---|---|---|---|")
    base_append = statistics.median(a for a, _ in results["plain"])
    base_read = statistics.median(r for _, r in results["plain"])
    for name in names:
        append = statistics.median(a for a, _ in results[name])
        read = statistics.median(r for _, r in results[name])
        print(
            f"| {name} | {append:,.0f} | {read:,.0f} | {append / base_append:.2f}x"
            f" | {read / base_read:.2f}x |"
        )


if __name__ == "__main__":
    asyncio.run(main())
