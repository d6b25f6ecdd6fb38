"""Partitioned subscriptions read their own partition from the store, on every store.

Each partition's read carries `ReadOptions.partition`, so the rows the store returns to all
partitions together are the feed once, not once per partition; a partition whose aggregates
have no events still moves its position to the feed's end (waiters, health and checkpoints
see it current). A store that cannot filter partitions gets the same deliveries, through the
subscription's own filter. The lag report of the package guide counts, it does not read.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from eventsource import DomainEvent, EventRegistry, EventStore, InMemoryEventStore, StoredEvent
from eventsource.repositories import InMemoryCheckpointRepository
from eventsource.stores.interface import ReadOptions
from eventsource.subscriptions import SubscriptionConfig, SubscriptionManager
from tests._stores import STORE_KINDS, open_event_store

registry = EventRegistry()

FAST = SubscriptionConfig(batch_size=7, poll_interval=0.05, retry_base=0.001, retry_cap=0.01)


class Tick(DomainEvent, registry=registry):
    n: int


class Tock(DomainEvent, registry=registry):
    n: int


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(request, registry, tmp_path) as opened:
        yield opened


class _Unfiltering(InMemoryEventStore):
    """A store that does not say it filters partitions (a custom store, a wrapper)."""

    filters_partitions = False


def _rows_read(store: EventStore) -> list[int]:
    """Counts the rows `store.read_all` returns from now on (the store itself answers)."""
    read = store.read_all
    rows = [0]

    async def counting(options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        async for stored in read(options):
            rows[0] += 1
            yield stored

    store.read_all = counting  # type: ignore[method-assign]
    return rows


async def _fill(store: EventStore) -> list[UUID]:
    """40 events of 8 aggregates, interleaved: 5 aggregates in partition 0 of 3, 3 in
    partition 1, none in partition 2."""
    rng = random.Random(16)
    aggregates = [UUID(int=rng.getrandbits(120) * 3 + (0 if i < 5 else 1)) for i in range(8)]
    for round_ in range(5):
        for aggregate in aggregates:
            await store.append_events(aggregate, "Clock", [Tick(n=round_)], round_)
    return aggregates


async def _run_partitions(store: EventStore) -> tuple[list[tuple[UUID, int]], Any]:
    handled: list[tuple[UUID, int]] = []

    async def record(stored: StoredEvent) -> None:
        assert isinstance(stored.event, Tick)
        handled.append((stored.aggregate_id, stored.event.n))

    checkpoints = InMemoryCheckpointRepository()
    async with SubscriptionManager(store, checkpoints, config=FAST) as manager:
        parts = manager.subscribe_partitioned(record, 3, name="clock")
        head = await store.current_position()
        for part in parts:
            await part.wait_for(head, timeout=20)
        for part in parts:  # the empty partition 2 included
            health = await part.health()
            assert health.events_behind == 0
            assert health.position is not None
            assert health.position >= head
    for part in parts:  # saved on stop: a restart resumes at the end, not at the start
        saved = await checkpoints.get(part.name)
        assert saved is not None
        assert saved.position >= head
    return handled, parts


async def test_each_partition_reads_only_its_own_events(store: EventStore) -> None:
    aggregates = await _fill(store)
    rows = _rows_read(store)
    handled, parts = await _run_partitions(store)
    assert sorted(handled) == sorted((a, n) for a in aggregates for n in range(5))
    for aggregate in aggregates:  # each aggregate in order, by its one partition
        assert [n for a, n in handled if a == aggregate] == [0, 1, 2, 3, 4]
    # The feed once over all partitions (reading it whole in each would make 3 x 40).
    assert rows[0] == 40
    assert [part.processed for part in parts] == [25, 15, 0]


async def test_a_store_that_cannot_filter_gets_the_same_deliveries() -> None:
    store = _Unfiltering(registry=registry)
    aggregates = await _fill(store)
    rows = _rows_read(store)
    handled, _ = await _run_partitions(store)
    assert sorted(handled) == sorted((a, n) for a in aggregates for n in range(5))
    assert rows[0] == 3 * 40  # each partition read the whole feed and skipped the rest


async def test_lag_metrics_count_without_reading_the_events_behind(store: EventStore) -> None:
    checkpoints = InMemoryCheckpointRepository(event_store=store)
    aggregate = UUID(int=7)
    first = await store.append_events(aggregate, "Clock", [Tick(n=0)], 0)
    await checkpoints.save("lagging", first.positions[0], event_id=first.events[0].event_id)
    events: list[DomainEvent] = [Tick(n=n) if n % 3 else Tock(n=n) for n in range(1, 31)]
    await store.append_events(aggregate, "Clock", events, 1)
    rows = _rows_read(store)
    metrics = await checkpoints.get_lag_metrics("lagging", ["Tick"])
    assert metrics is not None
    assert metrics.events_behind == 20
    assert metrics.latest_event_id == events[-2].event_id  # the newest Tick (n=29)
    assert (await checkpoints.get_lag_metrics("lagging")).events_behind == 30  # type: ignore[union-attr]
    assert rows[0] <= 2  # the newest event of each call, nothing behind the checkpoint
