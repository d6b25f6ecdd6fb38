"""`OutboxRepositoryContract` and `InboxRepositoryContract`: what every outbox and inbox
backend must do. A backend's test module subclasses them and supplies an empty repository."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import uuid4

import pytest

from eventsource._internal.clock import utc_now
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec
from eventsource.outbox.interface import InboxRepository, OutboxRepository
from eventsource.testing.events import ItemAdded, contract_registry

__all__ = ["InboxRepositoryContract", "OutboxRepositoryContract"]


def _stream(count: int) -> list[DomainEvent]:
    cart = uuid4()
    return [ItemAdded(name=f"item-{v}").attached(cart, "Cart", v) for v in range(1, count + 1)]


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

    async def test_cleanup_forgets_old_records(self, inbox: InboxRepository) -> None:
        old, new = uuid4(), uuid4()
        await inbox.record("billing", old)
        assert await inbox.cleanup(timedelta(hours=1)) == 0
        await asyncio.sleep(0.05)
        await inbox.record("billing", new)
        assert await inbox.cleanup(timedelta(seconds=0.03)) == 1
        assert not await inbox.contains("billing", old)
        assert await inbox.contains("billing", new)
