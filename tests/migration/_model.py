"""Events, writers and checks shared by the migration tests (and the migrator process)."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from uuid import UUID, uuid4

from eventsource import DomainEvent, EventRegistry, EventStore, ExpectedVersion, ReadOptions

registry = EventRegistry()


class Deposited(DomainEvent, registry=registry):
    amount: Decimal
    note: str
    ratio: float


async def write(
    store: EventStore,
    stop: asyncio.Event,
    *,
    streams: int = 6,
    tenant_id: UUID | None = None,
    pause: float = 0.002,
) -> int:
    """Append 1-3 events at a time to a few streams of its own until `stop`; returns how many."""
    ids = [uuid4() for _ in range(streams)]
    versions = dict.fromkeys(ids, 0)
    written = 0
    while not stop.is_set():
        stream = random.choice(ids)
        batch = [
            Deposited(
                amount=Decimal(random.randint(1, 10**6)) / 100,
                note="ünïcode ✓ " + "x" * random.randint(0, 40),
                ratio=random.random() * 1e20,
                tenant_id=tenant_id,
                metadata={"n": written + k, "nested": [1, 2.5, None]},
            )
            for k in range(random.randint(1, 3))
        ]
        expected = versions[stream] or ExpectedVersion.NO_STREAM
        await store.append_events(stream, "Account", batch, expected)
        versions[stream] += len(batch)
        written += len(batch)
        await asyncio.sleep(random.uniform(0, pause))
    return written


async def feed(store: EventStore, tenant_id: UUID | None = None) -> list[tuple[UUID, UUID, int]]:
    """(event id, stream, version) of every event, in feed order."""
    return [
        (s.event.event_id, s.event.aggregate_id, s.version)
        async for s in store.read_all(ReadOptions(tenant_id=tenant_id))
    ]


async def assert_same_events(
    source: EventStore, target: EventStore, tenant_id: UUID | None = None
) -> int:
    """Every source event exactly once in the target, decoding alike, in the same feed order
    (so per stream in version order); returns how many."""
    ours, theirs = await feed(source, tenant_id), await feed(target, tenant_id)
    assert len({event_id for event_id, _, _ in theirs}) == len(theirs), "duplicates"
    assert theirs == ours
    decoded_source = [s.event async for s in source.read_all(ReadOptions(tenant_id=tenant_id))]
    decoded_target = [s.event async for s in target.read_all(ReadOptions(tenant_id=tenant_id))]
    assert decoded_target == decoded_source
    return len(ours)
