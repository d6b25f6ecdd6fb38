"""Part of `EventStoreContract`: partitioned reads of the feed and counting without reading.

`ReadOptions.partition=(p, n)` keeps the aggregates with `aggregate_id.int % n == p`. That
formula is a published promise (partitioned subscriptions keep one checkpoint per partition,
so a store that splits differently hands events to the wrong checkpoint), and SQL stores
compute it on a uuid column with 64-bit arithmetic: these tests check it against Python for
random and edge-case ids and partition counts up to 2**31, and that every event, decodable or
not, lands in exactly one partition. `count_events` must agree with `read_all` for the same
options. Kept apart from `event_store.py` to keep modules small; `EventStoreContract`
inherits it, so every backend runs it unchanged.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import replace
from uuid import UUID

import pytest

from eventsource.events.base import DomainEvent
from eventsource.stores.interface import EventStore, ReadDirection, ReadOptions, StoredEvent
from eventsource.testing.events import ItemAdded, ItemRemoved, UnregisteredEvent

__all__ = ["FeedReadContract"]

_EDGE_IDS = [
    0,
    1,
    2**32 - 1,
    2**32,
    2**63,
    2**64 - 1,
    2**64,
    2**96 - 1,
    2**127,
    2**128 - 1,
    int("ffffffff" * 3 + "00000000", 16),
    int("80000000" * 4, 16),
    int("7fffffff" * 4, 16),
]
"""Ids whose 32-bit words sit at the edges of signed and unsigned ranges."""

_PARTITION_COUNTS = [1, 2, 3, 7, 16, 1000, 65537, 2**31 - 1, 2**31]


async def _aggregates(iterator: AsyncIterator[StoredEvent]) -> list[UUID]:
    return [stored.aggregate_id async for stored in iterator]


class FeedReadContract:
    """Tests of `ReadOptions.partition` and `EventStore.count_events` (needs a `store`
    fixture: `EventStoreContract` provides it)."""

    pytestmark = pytest.mark.asyncio

    async def test_partitions_are_aggregate_id_int_modulo_n_exactly(
        self, store: EventStore
    ) -> None:
        rng = random.Random(20261207)
        ids = [UUID(int=value) for value in _EDGE_IDS]
        ids += [UUID(int=rng.getrandbits(128)) for _ in range(150)]
        for aggregate in ids:
            await store.append_events(aggregate, "Cart", [ItemAdded(name="x")], 0)
        everything = set(ids)
        for n in _PARTITION_COUNTS:
            asked = set(range(n)) if n <= 16 else {0, n - 1}
            asked |= {aggregate.int % n for aggregate in rng.sample(ids, 20)}
            for p in sorted(asked):
                expected = {a for a in everything if a.int % n == p}
                options = ReadOptions(partition=(p, n), batch_size=7)
                read = await _aggregates(store.read_all(options))
                assert len(read) == len(set(read))
                assert set(read) == expected, f"partition {p} of {n}"
                assert await store.count_events(options) == len(expected)
        # A stream read keeps a whole stream or none of it.
        some = ids[-1]
        own = ReadOptions(partition=(some.int % 5, 5))
        other = ReadOptions(partition=((some.int + 1) % 5, 5))
        assert await _aggregates(store.read_stream(some, own)) == [some]
        assert await _aggregates(store.read_stream(some, other)) == []

    async def test_every_event_is_in_exactly_one_partition(self, store: EventStore) -> None:
        rng = random.Random(7)
        appended: list[UUID] = []
        for round_ in range(3):
            for _ in range(12):
                aggregate = UUID(int=rng.getrandbits(128))
                events: list[DomainEvent] = [ItemAdded(name=f"{round_}"), ItemRemoved(name="y")]
                if round_ == 1:  # a type this process cannot decode: its row still counts
                    events.append(UnregisteredEvent(note="?"))
                result = await store.append_events(aggregate, "Cart", events, 0)
                appended += [e.event_id for e in result.events]
        feed = [stored async for stored in store.read_all()]
        middle = feed[len(feed) // 3].position
        for base in (
            ReadOptions(),
            ReadOptions(after=middle),
            ReadOptions(event_types=["ItemRemoved", "UnregisteredEvent"], batch_size=5),
            ReadOptions(direction=ReadDirection.BACKWARD, after=middle),
        ):
            whole = [stored.position async for stored in store.read_all(base)]
            parts: list[StoredEvent] = []
            for p in range(4):
                parts += [s async for s in store.read_all(replace(base, partition=(p, 4)))]
            assert sorted(s.position for s in parts) == sorted(whole)  # no loss, no double
        undecodable = [
            s async for s in store.read_all(ReadOptions(event_types=["UnregisteredEvent"]))
        ]
        assert len(undecodable) == 12
        for stored in undecodable:
            await store.load_envelope(stored)
            p = stored.aggregate_id.int % 4
            mine = store.read_all(ReadOptions(partition=(p, 4), event_types=["UnregisteredEvent"]))
            assert stored.position in [s.position async for s in mine]
        assert sorted(s.event_id for s in feed) == sorted(appended)

    async def test_count_events_agrees_with_read_all(self, store: EventStore) -> None:
        assert await store.count_events() == 0
        rng = random.Random(3)
        for n in range(12):
            aggregate = UUID(int=rng.getrandbits(128))
            events: list[DomainEvent] = [
                ItemAdded(name=f"{i}") if i % 2 else ItemRemoved(name=f"{i}") for i in range(n % 4)
            ]
            if events:
                await store.append_events(aggregate, "Cart" if n % 3 else "Order", events, 0)
        feed = [stored async for stored in store.read_all()]
        middle = feed[len(feed) // 2].position
        for options in (
            ReadOptions(),
            ReadOptions(after=middle),
            ReadOptions(after=feed[-1].position),
            ReadOptions(after=middle, direction=ReadDirection.BACKWARD),
            ReadOptions(direction=ReadDirection.BACKWARD),
            ReadOptions(event_types=["ItemRemoved"]),
            ReadOptions(event_types=[]),
            ReadOptions(aggregate_type="Order", after=middle),
            ReadOptions(limit=3),
            ReadOptions(limit=0),
            ReadOptions(limit=10_000, event_types=["ItemAdded"]),
            ReadOptions(partition=(1, 3), after=middle),
        ):
            expected = len([stored async for stored in store.read_all(options)])
            assert await store.count_events(options) == expected, options
