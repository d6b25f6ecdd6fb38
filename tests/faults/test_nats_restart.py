"""A throw-away NATS server restarted (SIGTERM, then started again on the same store
directory) while writers append and a subscription runs on `NATSEventStore`.

A writer counts an append as acknowledged when `append_events` returned. While the server is
away appends fail with `TransientStoreError`; the writer re-sends the same events with the
same expected version (appends are idempotent), so a first attempt that was stored before
the connection broke comes back as `already_stored`. Required: every acknowledged event
stored exactly once, nothing stored that was never acknowledged, every stream in version
order, the subscription handled each event exactly once in feed order, and nobody restarted
the store or the subscription by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from eventsource import DomainEvent, EventRegistry, NATSEventStore
from eventsource.exceptions import TransientStoreError
from eventsource.projections import DeclarativeProjection, handles
from eventsource.repositories import InMemoryCheckpointRepository
from eventsource.subscriptions import SubscriptionConfig, SubscriptionManager
from tests import _services
from tests.faults._nats_server import BINARY, ThrowawayNATS

pytestmark = [pytest.mark.faults, pytest.mark.nats]

registry = EventRegistry()
FAST = SubscriptionConfig(batch_size=7, poll_interval=0.05, retry_base=0.01, retry_cap=0.2)


class Counted(DomainEvent, registry=registry):
    n: int


class Ledger(DeclarativeProjection):
    def __init__(self) -> None:
        self.seen: list[tuple[UUID, int, UUID]] = []

    @handles(Counted)
    async def _counted(self, event: Counted) -> None:
        self.seen.append((event.aggregate_id, event.aggregate_version, event.event_id))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThrowawayNATS]:
    if not BINARY.exists():
        _services.unavailable(f"no nats-server binary at {BINARY} for a throw-away server")
    nats = ThrowawayNATS(tmp_path)
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


APPENDS = 60
"""Appends per writer: at 30 ms apart, enough to still be writing after two restarts."""


async def _writer(
    store: NATSEventStore, stream: UUID, appends: int, acked: list[UUID], retries: list[int]
) -> None:
    for n in range(appends):
        batch = [Counted(n=2 * n), Counted(n=2 * n + 1)]
        while True:
            try:
                result = await store.append_events(stream, "Counter", batch, 2 * n)
            except TransientStoreError:
                retries[0] += 1
                await asyncio.sleep(0.1)
                continue
            acked.extend(e.event_id for e in result.events)
            break
        await asyncio.sleep(0.03)


async def test_server_restarts_lose_nothing_duplicate_nothing_keep_order(
    server: ThrowawayNATS,
) -> None:
    store = NATSEventStore(server.url, stream="faults", registry=registry, request_timeout=1.0)
    ledger = Ledger()
    streams = [uuid4() for _ in range(4)]
    acked: list[UUID] = []
    retries = [0]
    async with store, SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        subscription = m.subscribe(ledger)
        writers = asyncio.gather(*(_writer(store, s, APPENDS, acked, retries) for s in streams))
        for _ in range(2):
            await asyncio.sleep(0.3)
            assert not writers.done(), "the writers finished before the restart"
            # Down longer than the store's request timeout (1 s): appends in flight must fail
            # and be retried, not wait in the client's reconnect buffer and pass unnoticed.
            await asyncio.to_thread(server.restart, 1.5)
        await writers
        end = await store.current_position()
        await subscription.wait_for(end, timeout=60)

        stored = [s async for s in store.read_all()]
        assert server.restarts == 2
        assert retries[0] > 0, "no append met the restart"
        assert sorted(s.event_id for s in stored) == sorted(acked)  # acked = stored, once
        assert len(acked) == len(set(acked)) == 4 * APPENDS * 2
        versions = list(range(1, 2 * APPENDS + 1))
        for stream in streams:
            assert [s.version for s in stored if s.aggregate_id == stream] == versions
        # The subscription saw the feed exactly once, in feed order.
        assert [event_id for _, _, event_id in ledger.seen] == [s.event_id for s in stored]


async def test_a_feed_read_whose_page_times_out_resumes_without_a_gap_or_a_repeat(
    server: ThrowawayNATS,
) -> None:
    """The server frozen (SIGSTOP) for longer than the request timeout in the middle of a
    `read_all`: the page it did not answer is asked for again once it runs, and the reader
    gets every event once, in order, with no error."""
    import os
    import signal

    from eventsource import ReadOptions

    store = NATSEventStore(server.url, stream="paged", registry=registry, request_timeout=0.5)
    try:
        appended: list[UUID] = []
        for n in range(30):
            events = [Counted(n=10 * n + k) for k in range(10)]
            result = await store.append_events(uuid4(), "Counter", events, 0)
            appended.extend(e.event_id for e in result.events)
        assert server.process is not None
        pid = server.process.pid
        read: list[UUID] = []
        # Pages of 5 appends (50 events): the second page is asked for while it is frozen.
        async for stored in store.read_all(ReadOptions(batch_size=5)):
            read.append(stored.event_id)
            if len(read) == 50:
                os.kill(pid, signal.SIGSTOP)
                asyncio.get_running_loop().call_later(0.8, os.kill, pid, signal.SIGCONT)
        assert read == appended
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        await store.close()
