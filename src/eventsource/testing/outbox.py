"""`OutboxRepositoryContract` and `InboxRepositoryContract`: what every outbox and inbox
backend must do. A backend's test module subclasses them and supplies an empty repository."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from eventsource._internal.clock import utc_now
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import BusConnectionError, BusPublishError
from eventsource.outbox.interface import InboxRepository, OutboxEntry, OutboxRepository
from eventsource.outbox.relay import OutboxRelay
from eventsource.testing._cancel import PAUSES, cancel_in_flight
from eventsource.testing.events import ItemAdded, UnregisteredEvent, contract_registry

__all__ = ["InboxRepositoryContract", "OutboxRepositoryContract"]


def _stream(count: int) -> list[DomainEvent]:
    cart = uuid4()
    return [ItemAdded(name=f"item-{v}").attached(cart, "Cart", v) for v in range(1, count + 1)]


class _Broker:
    """A bus that records what it accepted; it refuses every batch holding an event named
    `refuse` (`BusPublishError`) and, while `down`, every publish (`BusConnectionError`)."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.down = False
        self.accepted: list[DomainEvent] = []

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        if self.down:
            raise BusConnectionError("broker unreachable")
        if any(isinstance(e, ItemAdded) and e.name == self.refuse for e in events):
            raise BusPublishError(f"the broker refused {self.refuse!r}")
        self.accepted.extend(events)

    def versions(self) -> dict[UUID, list[int]]:
        by_aggregate: dict[UUID, list[int]] = {}
        for event in self.accepted:
            by_aggregate.setdefault(event.aggregate_id, []).append(event.aggregate_version)
        return by_aggregate


def _relay(outbox: OutboxRepository, broker: _Broker, max_attempts: int = 2) -> OutboxRelay:
    return OutboxRelay(
        outbox, broker, registry=contract_registry, retry_delay=0.01, max_attempts=max_attempts
    )


async def _until_parked(outbox: OutboxRepository, relay: OutboxRelay) -> list[OutboxEntry]:
    """Run `relay` round after round (its retry delay is tiny) until a row is parked."""
    for _ in range(500):
        parked = await outbox.list_parked()
        if parked:
            return parked
        await asyncio.sleep(0.01)
        await relay.publish_pending()
    raise AssertionError("no row was parked after 500 relay rounds")


class OutboxRepositoryContract(ABC):
    """Abstract pytest suite; subclasses implement `create_outbox`."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_outbox(self) -> OutboxRepository:
        """A new, empty outbox."""

    @pytest.fixture
    async def outbox(self) -> AsyncIterator[OutboxRepository]:
        repository = await self.create_outbox()
        try:
            yield repository
        finally:
            await repository.close()

    async def test_claims_come_oldest_first_and_decode(self, outbox: OutboxRepository) -> None:
        events = _stream(3)
        await outbox.add(events)
        codec = EventCodec(contract_registry)
        async with outbox.claim(10) as batch:
            assert [e.event_id for e in batch.entries] == [e.event_id for e in events]
            entry = batch.entries[0]
            assert (entry.aggregate_id, entry.aggregate_type, entry.aggregate_version) == (
                events[0].aggregate_id,
                "Cart",
                1,
            )
            assert (entry.attempts, entry.last_error) == (0, None)
            rows = batch.entries
            decoded = [codec.decode(e.event_type, e.event_version, e.payload) for e in rows]
            assert decoded == events

    async def test_guide_add_event_pending_and_mark_published(
        self, outbox: OutboxRepository
    ) -> None:
        events = _stream(3)
        ids = [await outbox.add_event(event) for event in events]
        assert ids == sorted(set(ids))
        pending = await outbox.get_pending_events(limit=2)
        assert [(e.id, e.event_id) for e in pending] == [
            (ids[0], events[0].event_id),
            (ids[1], events[1].event_id),
        ]
        # Reading pending rows leases nothing: they are still there for a relay.
        assert [e.id for e in await outbox.get_pending_events(limit=100)] == ids
        for entry in pending:
            assert await outbox.mark_published(entry.id) is True
        assert await outbox.mark_published(ids[0]) is False  # published already
        assert await outbox.mark_published(ids[-1] + 1000) is False  # no such row
        assert [e.event_id for e in await outbox.get_pending_events()] == [events[2].event_id]
        stats = await outbox.stats()
        assert (stats.pending, stats.published) == (1, 2)

    async def test_published_rows_are_not_claimed_again(self, outbox: OutboxRepository) -> None:
        events = _stream(4)
        await outbox.add(events)
        async with outbox.claim(2) as batch:
            await batch.published(batch.entries)
        async with outbox.claim(10) as batch:
            assert [e.event_id for e in batch.entries] == [e.event_id for e in events[2:]]
        stats = await outbox.stats()
        assert (stats.pending, stats.failing, stats.published) == (2, 0, 2)
        assert stats.oldest_pending is not None

    async def test_stats_count_the_rows_and_batches_under_live_leases(
        self, outbox: OutboxRepository
    ) -> None:
        await outbox.add(_stream(3) + _stream(2))
        async with outbox.claim(2) as first, outbox.claim(10) as second:
            assert (len(first.entries), len(second.entries)) == (2, 2)  # the 3rd row waits
            stats = await outbox.stats()
            assert (stats.leased, stats.relays) == (4, 2)
            await first.published(first.entries)
        stats = await outbox.stats()
        assert (stats.leased, stats.relays) == (0, 0)

    async def test_a_batch_left_by_an_exception_marks_nothing(
        self, outbox: OutboxRepository
    ) -> None:
        events = _stream(2)
        await outbox.add(events)

        async def die_inside_the_batch() -> None:
            async with outbox.claim(10) as batch:
                await batch.published(batch.entries)
                raise RuntimeError("the relay died before the batch ended")

        with pytest.raises(RuntimeError):
            await die_inside_the_batch()
        async with outbox.claim(10) as batch:
            assert [e.event_id for e in batch.entries] == [e.event_id for e in events]

    async def test_a_failed_row_holds_back_its_aggregate_only(
        self, outbox: OutboxRepository
    ) -> None:
        stuck, free = _stream(3), _stream(1)
        await outbox.add([*stuck, *free])
        async with outbox.claim(1) as batch:
            (first,) = batch.entries
            await batch.failed(batch.entries, "broker down", utc_now() + timedelta(seconds=1))
        async with outbox.claim(10) as batch:
            assert [e.event_id for e in batch.entries] == [free[0].event_id]
            await batch.published(batch.entries)
        assert (await outbox.stats()).failing == 1
        await asyncio.sleep(1.1)
        async with outbox.claim(10) as batch:
            assert [e.event_id for e in batch.entries] == [e.event_id for e in stuck]
            retried = batch.entries[0]
            assert (retried.id, retried.attempts, retried.last_error) == (
                first.id,
                1,
                "broker down",
            )

    async def test_concurrent_claims_never_split_an_aggregate(
        self, outbox: OutboxRepository
    ) -> None:
        cart, other = _stream(4), _stream(2)
        await outbox.add([*cart[:2], *other, *cart[2:]])
        async with outbox.claim(2) as first:
            assert [e.event_id for e in first.entries] == [e.event_id for e in cart[:2]]
            async with outbox.claim(10) as second:
                # The cart's later events wait for the first batch; the other cart is free.
                assert [e.event_id for e in second.entries] == [e.event_id for e in other]
                await second.published(second.entries)
            await first.published(first.entries)
        async with outbox.claim(10) as batch:
            assert [e.event_id for e in batch.entries] == [e.event_id for e in cart[2:]]

    async def test_a_cancelled_call_leaves_the_outbox_usable_and_adds_all_or_nothing(
        self, outbox: OutboxRepository
    ) -> None:
        for pauses in PAUSES:
            events = _stream(3)
            await cancel_in_flight(outbox.add(events), pauses)

            async def claim_some() -> None:
                async with outbox.claim(1) as batch:
                    await batch.published(batch.entries)

            await cancel_in_flight(claim_some(), pauses)
            later = _stream(1)
            await outbox.add(later)
            stats = await outbox.stats()
            async with outbox.claim(100) as batch:
                claimed = {entry.event_id for entry in batch.entries}
                await batch.published(batch.entries)
            assert later[0].event_id in claimed
            added = {event.event_id for event in events}
            # A claimed row whose claim was cancelled stays leased until its lease expires.
            assert claimed & added in (set(), added - {events[0].event_id}, added)
            assert stats.pending >= 1

    async def test_cleanup_deletes_only_old_published_rows(self, outbox: OutboxRepository) -> None:
        await outbox.add(_stream(3))
        async with outbox.claim(2) as batch:
            await batch.published(batch.entries)
        assert await outbox.cleanup(timedelta(hours=1)) == 0
        await asyncio.sleep(0.05)
        assert await outbox.cleanup(timedelta(0)) == 2
        stats = await outbox.stats()
        assert (stats.pending, stats.published) == (1, 0)

    async def test_a_parked_row_holds_back_its_aggregate_until_retried(
        self, outbox: OutboxRepository
    ) -> None:
        stuck, free = _stream(3), _stream(1)
        await outbox.add([*stuck, *free])
        async with outbox.claim(1) as batch:
            (first,) = batch.entries
            await batch.parked(batch.entries, "cannot publish")
        stats = await outbox.stats()
        assert (stats.pending, stats.failing, stats.parked) == (3, 0, 1)
        async with outbox.claim(10) as batch:
            assert [e.event_id for e in batch.entries] == [free[0].event_id]
            await batch.published(batch.entries)
            published = batch.entries[0].id
        (parked,) = await outbox.list_parked()
        assert (parked.id, parked.attempts, parked.last_error) == (first.id, 1, "cannot publish")
        assert parked.parked_at is not None
        assert not await outbox.retry_parked(published), "only parked rows can be retried"
        assert not await outbox.discard_parked(published), "only parked rows can be discarded"
        assert await outbox.retry_parked(first.id)
        assert not await outbox.retry_parked(first.id), "the row is no longer parked"
        assert await outbox.list_parked() == []
        async with outbox.claim(10) as batch:
            assert [e.event_id for e in batch.entries] == [e.event_id for e in stuck]
            assert (batch.entries[0].attempts, batch.entries[0].parked_at) == (0, None)

    async def test_discarding_a_parked_row_releases_its_aggregate(
        self, outbox: OutboxRepository
    ) -> None:
        stuck = _stream(3)
        await outbox.add(stuck)
        async with outbox.claim(1) as batch:
            (first,) = batch.entries
            await batch.parked(batch.entries, "no such event type")
        async with outbox.claim(10) as batch:
            assert batch.entries == []
        assert await outbox.discard_parked(first.id)
        assert not await outbox.discard_parked(first.id)
        async with outbox.claim(10) as batch:
            assert [e.event_id for e in batch.entries] == [e.event_id for e in stuck[1:]]
        stats = await outbox.stats()
        assert (stats.pending, stats.parked) == (2, 0)

    async def test_errors_with_nul_characters_are_stored(self, outbox: OutboxRepository) -> None:
        await outbox.add(_stream(1))
        async with outbox.claim(1) as batch:
            await batch.parked(batch.entries, "bad byte \x00 in \ud800 reply")
        (parked,) = await outbox.list_parked()
        assert parked.last_error == "bad byte \\x00 in \\ud800 reply"

    async def test_relay_publishes_around_an_undecodable_row_then_parks_it(
        self, outbox: OutboxRepository
    ) -> None:
        cart, other = uuid4(), _stream(2)
        unknown = UnregisteredEvent().attached(cart, "Cart", 2)
        first, third = (ItemAdded(name=f"item-{v}").attached(cart, "Cart", v) for v in (1, 3))
        await outbox.add([first, other[0], unknown, other[1], third])
        broker = _Broker()
        relay = _relay(outbox, broker)
        assert await relay.publish_pending() == 3
        assert broker.versions() == {cart: [1], other[0].aggregate_id: [1, 2]}
        (parked,) = await _until_parked(outbox, relay)
        assert (parked.event_id, parked.attempts) == (unknown.event_id, 2)
        assert "UnregisteredEvent" in (parked.last_error or "")
        assert await relay.publish_pending() == 0, "the cart's later event waits behind it"
        assert relay.parked == 1
        assert await outbox.discard_parked(parked.id)
        assert await relay.publish_pending() == 1
        assert broker.versions()[cart] == [1, 3]

    async def test_relay_finds_the_row_the_bus_refuses_and_a_retry_releases_it(
        self, outbox: OutboxRepository
    ) -> None:
        cart, others = uuid4(), [_stream(1), _stream(1)]
        rows = [ItemAdded(name=n).attached(cart, "Cart", v) for v, n in enumerate("apb", 1)]
        await outbox.add([rows[0], others[0][0], rows[1], others[1][0], rows[2]])
        broker = _Broker(refuse="p")
        relay = _relay(outbox, broker)
        assert await relay.publish_pending() == 3
        assert broker.versions() == {
            cart: [1],
            others[0][0].aggregate_id: [1],
            others[1][0].aggregate_id: [1],
        }
        (parked,) = await _until_parked(outbox, relay)
        assert parked.event_id == rows[1].event_id
        assert "BusPublishError" in (parked.last_error or "")
        assert await relay.publish_pending() == 0
        broker.refuse = None  # the operator fixed what the broker refused
        assert await outbox.retry_parked(parked.id)
        assert await relay.publish_pending() == 2
        assert broker.versions()[cart] == [1, 2, 3]
        assert (await outbox.stats()).pending == 0

    async def test_relay_never_parks_rows_while_the_broker_is_unreachable(
        self, outbox: OutboxRepository
    ) -> None:
        events = _stream(2)
        await outbox.add(events)
        broker = _Broker()
        broker.down = True
        relay = _relay(outbox, broker, max_attempts=1)
        for _ in range(500):
            await relay.publish_pending()
            if relay.failed_events >= 6:  # three failed rounds of both rows
                break
            await asyncio.sleep(0.01)
        stats = await outbox.stats()
        assert (relay.failed_events, stats.pending, stats.failing, stats.parked) == (6, 2, 2, 0)
        assert await outbox.list_parked() == []
        broker.down = False
        for _ in range(500):
            if await relay.publish_pending():
                break
            await asyncio.sleep(0.01)
        assert [e.event_id for e in broker.accepted] == [e.event_id for e in events]


class InboxRepositoryContract(ABC):
    """Abstract pytest suite; subclasses implement `create_inbox`."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_inbox(self) -> InboxRepository:
        """A new, empty inbox."""

    @pytest.fixture
    async def inbox(self) -> AsyncIterator[InboxRepository]:
        repository = await self.create_inbox()
        try:
            yield repository
        finally:
            await repository.close()

    async def test_an_event_is_recorded_once_per_consumer(self, inbox: InboxRepository) -> None:
        event_id = uuid4()
        assert not await inbox.contains("billing", event_id)
        assert await inbox.record("billing", event_id)
        assert not await inbox.record("billing", event_id)
        assert await inbox.contains("billing", event_id)
        assert not await inbox.contains("shipping", event_id)
        assert await inbox.record("shipping", event_id)

    async def test_concurrent_records_of_one_event_let_one_win(
        self, inbox: InboxRepository
    ) -> None:
        event_id = uuid4()
        wins = await asyncio.gather(*(inbox.record("billing", event_id) for _ in range(8)))
        assert sorted(wins) == [False] * 7 + [True]

    async def test_a_cancelled_record_leaves_the_inbox_usable(self, inbox: InboxRepository) -> None:
        for pauses in PAUSES:
            first, second = uuid4(), uuid4()
            await cancel_in_flight(inbox.record("billing", first), pauses)
            assert await inbox.record("billing", second)
            # recorded or not, but consistently so
            assert await inbox.contains("billing", first) is not await inbox.record(
                "billing", first
            )
            assert await inbox.contains("billing", first)

    async def test_cleanup_forgets_old_records(self, inbox: InboxRepository) -> None:
        old, new = uuid4(), uuid4()
        await inbox.record("billing", old)
        assert await inbox.cleanup(timedelta(hours=1)) == 0
        await asyncio.sleep(0.05)
        await inbox.record("billing", new)
        assert await inbox.cleanup(timedelta(seconds=0.03)) == 1
        assert not await inbox.contains("billing", old)
        assert await inbox.contains("billing", new)
