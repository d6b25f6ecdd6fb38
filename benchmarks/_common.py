"""What the benchmarks share: the benchmark aggregate, timing (interleaved sides, medians,
percentiles, the load average) and the results tables; plus the older two-sided raw-asyncpg and
library sides that snapshots.py and subscriptions.py still use (postgresql.py has its three
sides in `_pg_sides`, sqlite.py in `_sqlite_sides`)."""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID, uuid4

import asyncpg
from pydantic import BaseModel

from eventsource import (
    AggregateCache,
    AggregateRepository,
    DeclarativeAggregate,
    DomainEvent,
    EventRegistry,
    EventStore,
    ReadOptions,
    handles,
)
from eventsource._internal.ids import uuid7

URL = os.environ.get("EVENTSOURCE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
registry = EventRegistry()


NOTE = "benchmark payload of a typical size, a few fields and some text"
"""The event's second domain field: with the amount, a payload of about 90 characters."""


class Incremented(DomainEvent, registry=registry):
    amount: int
    note: str = NOTE


class CounterState(BaseModel):
    total: int = 0
    count: int = 0


class Counter(DeclarativeAggregate[CounterState]):
    aggregate_type = "Counter"

    def increment(self, amount: int) -> None:
        self.apply_event(Incremented(amount=amount))

    @handles(Incremented)
    def _incremented(self, event: Incremented) -> None:
        self.state.total += event.amount
        self.state.count += 1


class Conflict(Exception):
    """The raw append found the stream at another version."""


async def keep_session(connection: asyncpg.Connection) -> None:
    """Skip the pool's reset query on release (a round trip): raw asyncpg at its fastest."""


# -- the raw side ------------------------------------------------------------------------------


class Raw:
    """Hand-written asyncpg against the same table."""

    def __init__(self, pool: asyncpg.Pool, table: str, channel: str) -> None:
        self.pool = pool
        self.channel = channel
        self.append_sql = (
            f"WITH appended AS ("
            f" INSERT INTO {table} (event_id, event_type, event_version, aggregate_id,"
            f" aggregate_type, aggregate_version, tenant_id, occurred_at, payload)"
            f" SELECT e.event_id, e.event_type, 1, $1, $2, $5 + e.ord, NULL, e.occurred_at,"
            f" e.payload::jsonb"
            f" FROM unnest($3::uuid[], $4::text[], $6::timestamptz[], $7::text[])"
            f" WITH ORDINALITY AS e(event_id, event_type, occurred_at, payload, ord)"
            f" WHERE $5::bigint = 0 OR EXISTS (SELECT 1 FROM {table}"
            f" WHERE aggregate_id = $1 AND aggregate_version = $5::bigint)"
            f" ORDER BY e.ord RETURNING transaction_id, position)"
            f" SELECT transaction_id, position, (SELECT pg_notify($8, $2)) IS NULL FROM appended"
        )
        self.stream_sql = (
            f"SELECT aggregate_version, payload::text FROM {table}"
            " WHERE aggregate_id = $1 ORDER BY aggregate_version"
        )
        self.feed_sql = (
            f"SELECT transaction_id, position, event_id, payload::text FROM {table}"
            " WHERE (transaction_id, position) > ($1::xid8, $2::bigint)"
            " AND transaction_id < (SELECT pg_snapshot_xmin(pg_current_snapshot()))"
            " ORDER BY transaction_id, position LIMIT $3"
        )

    async def append(self, aggregate_id: UUID, version: int, amounts: list[int]) -> int:
        now = datetime.now(UTC)
        ids = [uuid7() for _ in amounts]  # the library's ids: same index behaviour
        payloads = [
            json.dumps(
                {
                    "event_id": str(event_id),
                    "event_type": "Incremented",
                    "aggregate_id": str(aggregate_id),
                    "aggregate_type": "Counter",
                    "aggregate_version": version + n,
                    "occurred_at": now.isoformat(),
                    "amount": amount,
                    "note": Incremented.model_fields["note"].default,
                }
            )
            for n, (event_id, amount) in enumerate(zip(ids, amounts, strict=True), start=1)
        ]
        async with self.pool.acquire() as conn:
            try:
                rows = await conn.fetch(
                    self.append_sql,
                    aggregate_id,
                    "Counter",
                    ids,
                    ["Incremented"] * len(ids),
                    version,
                    [now] * len(ids),
                    payloads,
                    self.channel,
                )
            except asyncpg.UniqueViolationError:
                rows = []
        if len(rows) != len(amounts):
            raise Conflict
        return version + len(amounts)

    async def load(self, aggregate_id: UUID) -> tuple[int, int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(self.stream_sql, aggregate_id)
        total = 0
        for row in rows:
            total += json.loads(row[1])["amount"]
        return (rows[-1][0] if rows else 0), total

    async def command(self, aggregate_id: UUID) -> None:
        while True:  # like AggregateRepository.execute: reload and retry on a conflict
            version, _ = await self.load(aggregate_id)
            try:
                await self.append(aggregate_id, version, [1])
            except Conflict:
                continue
            return

    async def catch_up(self, limit: int, batch: int = 1000) -> tuple[int, set[UUID]]:
        after: tuple[int, int] = (0, 0)
        total = 0
        seen: set[UUID] = set()
        async with self.pool.acquire() as conn:
            while len(seen) < limit:
                rows = await conn.fetch(
                    self.feed_sql, after[0], after[1], min(batch, limit - len(seen))
                )
                for row in rows:
                    total += json.loads(row[3]).get("amount", 0)
                    seen.add(row[2])
                if not rows:
                    break
                after = (rows[-1][0], rows[-1][1])
        return total, seen


# -- the library side --------------------------------------------------------------------------


class Lib:
    """The library through its public API: AggregateRepository and an event store (the
    PostgreSQL or the SQLite one). Events are identified by their feed position, the key
    every side uses to count what a reader missed."""

    def __init__(self, store: EventStore, cache: AggregateCache | None = None) -> None:
        self.store = store
        self.counters = AggregateRepository(store, Counter, cache=cache)

    async def close(self) -> None:
        await self.store.close()

    async def append(self, aggregate_id: UUID, version: int, amounts: list[int]) -> int:
        return (await self.append_keyed(aggregate_id, version, amounts))[0]

    async def append_keyed(
        self, aggregate_id: UUID, version: int, amounts: list[int]
    ) -> tuple[int, list[Hashable]]:
        events = [Incremented(amount=a) for a in amounts]
        result = await self.store.append_events(aggregate_id, "Counter", events, version)
        return result.new_version, [(int(p.commit), p.sequence) for p in result.positions]

    async def load(self, aggregate_id: UUID) -> tuple[int, int]:
        counter = await self.counters.load(aggregate_id)
        return counter.version, counter.state.total

    async def command(self, aggregate_id: UUID) -> UUID:
        """Load, decide, append one event; returns the id of the event appended."""

        def increment(counter: Counter) -> UUID:
            counter.increment(1)
            return counter.uncommitted_events[-1].event_id

        return await self.counters.execute(aggregate_id, increment)

    async def catch_up(self, limit: int, batch: int = 1000) -> tuple[int, int]:
        """Read the first `limit` events of the feed, decoding each; (sum, count)."""
        total = count = 0
        async for stored in self.store.read_all(ReadOptions(batch_size=batch, limit=limit)):
            event = stored.event
            if isinstance(event, Incremented):
                total += event.amount
            count += 1
        return total, count

    async def start(self) -> Any:
        return await self.store.current_position()

    async def follow(self, after: Any) -> tuple[Any, list[Hashable]]:
        """Everything readable after `after`, decoded; (new after, keys read)."""
        keys: list[Hashable] = []
        async for stored in self.store.read_all(ReadOptions(after=after)):
            stored.event  # noqa: B018 - decode, as a projection would
            after = stored.position
            keys.append((int(after.commit), after.sequence))
        return after, keys


# -- workloads ---------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    unit: str
    lib: float
    raw: float
    target: str
    higher_is_better: bool = True
    note: str = ""


async def interleave(
    repeats: int, lib: Callable[[], Awaitable[float]], raw: Callable[[], Awaitable[float]]
) -> tuple[float, float]:
    lib_values, raw_values = [], []
    for n in range(repeats):
        first, second = (lib, raw) if n % 2 == 0 else (raw, lib)
        a = await first()
        b = await second()
        lib_values.append(a if first is lib else b)
        raw_values.append(b if first is lib else a)
    return statistics.median(lib_values), statistics.median(raw_values)


def print_table(title: str, results: list[Result]) -> None:
    print(f"{title}\n")
    print("| workload | library | raw asyncpg | ratio | target |")
    print("|---|---|---|---|---|")
    for r in results:
        ratio = f"{r.lib / r.raw:.2f}x" + (" time" if not r.higher_is_better else "")
        extra = f" ({r.note})" if r.note else ""
        lib, raw_value = f"{_figure(r.lib)} {r.unit}", f"{_figure(r.raw)} {r.unit}"
        print(f"| {r.name} | {lib} | {raw_value} | {ratio}{extra} | {r.target or '-'} |")


def _figure(value: float) -> str:
    return f"{value:,.2f}" if value < 10 else f"{value:,.0f}"


# -- several sides, several baselines ----------------------------------------------------------


class Appender(Protocol):
    async def append(self, aggregate_id: UUID, version: int, amounts: list[int]) -> int: ...


class RawSide(Appender, Protocol):
    async def load(self, aggregate_id: UUID) -> tuple[int, int]: ...


async def raw_command(side: RawSide, aggregate_id: UUID) -> None:
    """A hand-written command: load, decide, append one event; like
    AggregateRepository.execute, reload and retry when the append raises `Conflict`."""
    while True:
        version, _ = await side.load(aggregate_id)
        try:
            await side.append(aggregate_id, version, [1])
        except Conflict:
            continue
        return


async def fill(side: Appender, events: int) -> None:
    """Append `events` events (rounded down to thousands) in streams of 1,000: setup."""
    for _ in range(events // 1000):
        await side.append(uuid4(), 0, [1] * 1000)


async def per_second(count: int, work: Callable[[], Awaitable[object]]) -> float:
    """`count` divided by the seconds `work()` took."""
    start = time.perf_counter()
    await work()
    return count / (time.perf_counter() - start)


async def interleave_sides(
    repeats: int, sides: Mapping[str, Callable[[], Awaitable[float]]]
) -> dict[str, float]:
    """Median of `repeats` runs of each side, the order rotated every round, so a noisy
    neighbour or a warming cache hits every side alike. Each run starts after a full garbage
    collection: the collections a run triggers are then its own objects' doing, not a
    debt the side before it left (a full collection of this process costs tens of ms)."""
    names = list(sides)
    values: dict[str, list[float]] = {name: [] for name in names}
    for n in range(repeats):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            gc.collect()
            values[name].append(await sides[name]())
    return {name: statistics.median(v) for name, v in values.items()}


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


@dataclass
class Line:
    """One workload: the library's figure and each baseline's, same unit."""

    name: str
    unit: str
    lib: float
    baselines: dict[str, float]
    target: str = ""
    higher_is_better: bool = True
    note: str = ""

    def ratio(self, baseline: str) -> str:
        other = self.baselines.get(baseline)
        if not other:
            return "-"
        return f"{self.lib / other:.2f}x" + ("" if self.higher_is_better else " time")


def print_lines(title: str, baselines: list[str], lines: list[Line]) -> None:
    """A markdown table: library, each baseline, the ratio to each, the target (which
    compares with the last baseline), notes."""
    print(f"{title}\n")
    heads = " | ".join(baselines)
    ratios = " | ".join(f"vs {b}" for b in baselines)
    print(f"| workload | library | {heads} | {ratios} | target | note |")
    print("|---" * (4 + 2 * len(baselines)) + "|")
    for line in lines:
        cells = [f"{_figure(line.lib)} {line.unit}"]
        cells += [
            f"{_figure(line.baselines[b])} {line.unit}" if b in line.baselines else "-"
            for b in baselines
        ]
        cells += [line.ratio(b) for b in baselines]
        cells += [line.target or "-", line.note or ""]
        print(f"| {line.name} | " + " | ".join(cells) + " |")
    print()
