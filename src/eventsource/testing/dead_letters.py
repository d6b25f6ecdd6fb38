"""`DLQRepositoryContract`: the behaviour every `DLQRepository` backend must have.

A backend's test module subclasses it and supplies an empty repository::

    class TestMyDeadLetters(DLQRepositoryContract):
        async def create_repository(self) -> DLQRepository:
            return MyDLQRepository(...)
"""

from __future__ import annotations

import asyncio
import itertools
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from eventsource.events.serialization import EventCodec
from eventsource.repositories.interface import DeadLetter, DeadLetterStatus, DLQRepository
from eventsource.stores.interface import Position, StoredEvent
from eventsource.testing.events import ItemAdded, contract_registry

__all__ = ["DLQRepositoryContract"]

_positions = itertools.count(1)


def _stored(name: str = "apple") -> StoredEvent:
    event = ItemAdded(
        name=name,
        quantity=3,
        aggregate_id=uuid4(),
        aggregate_type="Cart",
        aggregate_version=2,
        metadata={"note": 'Zoë "quoted" \\ name', "tags": ["a", "b"], "nested": {"n": 1.5}},
    )
    return StoredEvent(event, Position(2**40, next(_positions)), datetime.now(UTC))


def _undecodable(payload: str) -> StoredEvent:
    """A stored row of a type `contract_registry` does not know, with `payload` as its text."""
    return StoredEvent.from_row(
        EventCodec(contract_registry),
        Position(2**40, next(_positions)),
        datetime.now(UTC),
        uuid4(),
        "NewerServiceEvent",
        4,
        uuid4(),
        "Cart",
        7,
        payload,
    )


def _failing_handler(error: Exception) -> Exception:
    """`error`, raised here (so its traceback names this function) and caught."""
    try:
        raise error
    except Exception as exc:
        return exc


def _ids(letters: list[DeadLetter]) -> list[object]:
    return [letter.id for letter in letters]


def _oldest_first(letters: list[DeadLetter]) -> list[DeadLetter]:
    return sorted(letters, key=lambda letter: (letter.first_failed_at, letter.id))


class DLQRepositoryContract(ABC):
    """Abstract pytest suite; subclasses implement `create_repository`."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_repository(self) -> DLQRepository:
        """A new, empty dead-letter repository."""

    @pytest.fixture
    async def dlq(self) -> AsyncIterator[DLQRepository]:
        repository = await self.create_repository()
        try:
            yield repository
        finally:
            await repository.close()

    async def _add(self, dlq: DLQRepository, subscription: str = "billing") -> DeadLetter:
        return await dlq.add(subscription, _stored(), _failing_handler(ValueError("boom")), 1)

    async def test_unknown_dead_letter_is_none(self, dlq: DLQRepository) -> None:
        assert await dlq.get(uuid4()) is None
        assert await dlq.list(status=None) == []
        assert await dlq.count() == 0
        await self._add(dlq)
        assert await dlq.get(uuid4()) is None

    async def test_package_guide_reads_resolves_and_counts(self, dlq: DLQRepository) -> None:
        first = await self._add(dlq, "billing")
        await self._add(dlq, "billing")
        other = await self._add(dlq, "shipping")
        (entry, _) = await dlq.get_failed_events(projection_name="billing")
        assert (entry.id, entry.projection_name, entry.event_id) == (
            first.id,
            "billing",
            first.event_id,
        )
        assert (entry.error_message, entry.retry_count, entry.status) == (
            "ValueError: boom",
            1,
            "failed",
        )
        assert entry.event_data["name"] == "apple"
        counts = await dlq.get_projection_failure_counts()
        assert [(c.projection_name, c.failure_count) for c in counts] == [
            ("billing", 2),
            ("shipping", 1),
        ]
        assert await dlq.mark_resolved(other.id, resolved_by="admin") is True
        assert await dlq.mark_resolved(other.id, resolved_by="admin") is False
        stats = await dlq.get_failure_stats()
        assert (stats.total_failed, stats.total_resolved, stats.affected_projections) == (2, 1, 1)
        assert stats.oldest_failure == first.first_failed_at
        (resolved,) = await dlq.get_failed_events("shipping", status="resolved")
        assert (resolved.status, resolved.resolved_by) == ("resolved", "admin")

    async def test_add_keeps_the_event_and_the_error(self, dlq: DLQRepository) -> None:
        stored = _stored()
        error = _failing_handler(ValueError('bad "quantity" for Zoë\nsecond line'))
        before = datetime.now(UTC)
        letter = await dlq.add('billing "v2"', stored, error, 3)
        after = datetime.now(UTC)
        assert (letter.subscription, letter.event_id, letter.event_type, letter.position) == (
            'billing "v2"',
            stored.event_id,
            "ItemAdded",
            stored.position,
        )
        assert json.loads(letter.payload) == json.loads(EventCodec.encode(stored.event))
        assert EventCodec(contract_registry).decode("ItemAdded", 1, letter.payload) == stored.event
        assert letter.error == 'ValueError: bad "quantity" for Zoë\nsecond line'
        assert letter.traceback.startswith("Traceback (most recent call last):")
        assert "_failing_handler" in letter.traceback
        assert (letter.attempts, letter.status) == (3, DeadLetterStatus.FAILED)
        assert before <= letter.first_failed_at == letter.last_failed_at <= after
        assert letter.first_failed_at.tzinfo is not None
        assert (letter.resolved_at, letter.resolved_by) == (None, None)
        assert await dlq.get(letter.id) == letter

    async def test_an_undecodable_event_keeps_its_raw_row(self, dlq: DLQRepository) -> None:
        """A row the reader could not decode (here: not even JSON, of a type nobody
        registers) is kept as stored, with its envelope; decoding it again later works from
        the letter's payload once the type is known."""
        raw = '{"name": "Zoë", "quantity": not json'
        stored = _undecodable(raw)
        decode_error = stored.decode_error()
        assert decode_error is not None
        letter = await dlq.add("billing", stored, decode_error, 3)
        assert letter.undecodable
        assert letter.payload == raw
        assert (letter.event_id, letter.event_type, letter.position) == (
            stored.event_id,
            "NewerServiceEvent",
            stored.position,
        )
        assert (letter.event_version, letter.aggregate_type, letter.aggregate_version) == (
            4,
            "Cart",
            7,
        )
        assert letter.aggregate_id == stored.aggregate_id
        assert letter.error.startswith("EventTypeNotFoundError: ")
        assert await dlq.get(letter.id) == letter

        decodable = _stored()
        kept = await dlq.add("billing", decodable, _failing_handler(ValueError("boom")), 1)
        assert not kept.undecodable
        assert (kept.event_version, kept.aggregate_id, kept.aggregate_version) == (
            1,
            decodable.aggregate_id,
            2,
        )

    async def test_a_repeated_failure_updates_the_same_letter(self, dlq: DLQRepository) -> None:
        stored = _stored()
        first = await dlq.add("billing", stored, _failing_handler(ValueError("first")), 2)
        again = await dlq.add("billing", stored, _failing_handler(RuntimeError("second")), 3)
        assert again.id == first.id
        assert again.attempts == 5
        assert again.error == "RuntimeError: second"
        assert "RuntimeError: second" in again.traceback
        assert "first" not in again.traceback
        assert again.first_failed_at == first.first_failed_at
        assert again.last_failed_at >= first.last_failed_at
        assert (again.position, again.payload) == (first.position, first.payload)
        assert await dlq.get(first.id) == again
        assert await dlq.count() == 1

    async def test_another_subscription_gets_its_own_letter(self, dlq: DLQRepository) -> None:
        stored = _stored()
        billing = await dlq.add("billing", stored, _failing_handler(ValueError("a")), 2)
        shipping = await dlq.add("shipping", stored, _failing_handler(ValueError("b")), 1)
        assert billing.id != shipping.id
        assert (shipping.subscription, shipping.attempts) == ("shipping", 1)
        assert await dlq.get(billing.id) == billing
        assert (await dlq.count("billing"), await dlq.count("shipping"), await dlq.count()) == (
            1,
            1,
            2,
        )

    async def test_failing_again_reopens_a_retrying_or_resolved_letter(
        self, dlq: DLQRepository
    ) -> None:
        stored = _stored()
        letter = await dlq.add("billing", stored, _failing_handler(ValueError("1")), 1)
        assert await dlq.mark_retrying(letter.id) is True
        again = await dlq.add("billing", stored, _failing_handler(ValueError("2")), 1)
        assert (again.id, again.status, again.attempts) == (letter.id, DeadLetterStatus.FAILED, 2)
        assert await dlq.resolve(letter.id, resolved_by="ann") is True
        reopened = await dlq.add("billing", stored, _failing_handler(ValueError("3")), 1)
        assert (reopened.status, reopened.attempts) == (DeadLetterStatus.FAILED, 3)
        assert (reopened.resolved_at, reopened.resolved_by) == (None, None)
        assert await dlq.get(letter.id) == reopened

    async def test_concurrent_failures_of_one_event_add_up_on_one_letter(
        self, dlq: DLQRepository
    ) -> None:
        stored = _stored()
        letters = await asyncio.gather(
            *(
                dlq.add("billing", stored, _failing_handler(ValueError(str(n))), 1)
                for n in range(10)
            )
        )
        assert len({letter.id for letter in letters}) == 1
        assert sorted(letter.attempts for letter in letters) == list(range(1, 11))
        kept = await dlq.get(letters[0].id)
        assert kept is not None
        assert kept.attempts == 10
        assert await dlq.count() == 1

    async def test_list_shows_failed_letters_oldest_first(self, dlq: DLQRepository) -> None:
        events = [_stored() for _ in range(3)]
        error = _failing_handler(ValueError("boom"))
        billing = [await dlq.add("billing", stored, error, 1) for stored in events]
        shipping = await self._add(dlq, "shipping")
        # A new failure of the oldest letter keeps its place: the order is by first failure.
        billing[0] = await dlq.add("billing", events[0], error, 1)
        assert await dlq.list("billing") == _oldest_first(billing)
        assert _ids(await dlq.list()) == _ids(_oldest_first([*billing, shipping]))
        assert await dlq.list("shipping") == [shipping]
        assert await dlq.list("nobody") == []

    async def test_list_filters_by_status(self, dlq: DLQRepository) -> None:
        failed, retrying, resolved = [await self._add(dlq) for _ in range(3)]
        await dlq.mark_retrying(retrying.id)
        await dlq.resolve(resolved.id, resolved_by="ann")
        everything = _ids(_oldest_first([failed, retrying, resolved]))
        assert _ids(await dlq.list()) == [failed.id]
        assert _ids(await dlq.list(status=DeadLetterStatus.RETRYING)) == [retrying.id]
        assert _ids(await dlq.list(status=DeadLetterStatus.RESOLVED)) == [resolved.id]
        assert _ids(await dlq.list(status=None)) == everything
        assert _ids(await dlq.list("billing", status=None)) == everything
        assert await dlq.list("shipping", status=None) == []
        listed = await dlq.list(status=DeadLetterStatus.RESOLVED)
        assert listed[0].status is DeadLetterStatus.RESOLVED

    async def test_list_limit(self, dlq: DLQRepository) -> None:
        letters = _oldest_first([await self._add(dlq) for _ in range(101)])
        assert _ids(await dlq.list()) == _ids(letters[:100])
        assert _ids(await dlq.list(limit=2)) == _ids(letters[:2])
        assert _ids(await dlq.list("billing", status=None, limit=200)) == _ids(letters)

    async def test_count_by_subscription_and_status(self, dlq: DLQRepository) -> None:
        billing = [await self._add(dlq, "billing") for _ in range(3)]
        await self._add(dlq, "shipping")
        await dlq.mark_retrying(billing[0].id)
        await dlq.resolve(billing[1].id, resolved_by="ann")
        assert await dlq.count() == 4
        assert await dlq.count("billing") == 3
        assert await dlq.count(status=DeadLetterStatus.FAILED) == 2
        assert await dlq.count("billing", status=DeadLetterStatus.FAILED) == 1
        assert await dlq.count("billing", status=DeadLetterStatus.RETRYING) == 1
        assert await dlq.count("shipping", status=DeadLetterStatus.RESOLVED) == 0
        assert await dlq.count("nobody") == 0

    async def test_mark_retrying_takes_failed_letters_only(self, dlq: DLQRepository) -> None:
        letter, resolved = await self._add(dlq), await self._add(dlq)
        assert await dlq.mark_retrying(letter.id) is True
        retrying = await dlq.get(letter.id)
        assert retrying is not None
        assert retrying.status is DeadLetterStatus.RETRYING
        assert retrying.attempts == letter.attempts
        assert await dlq.mark_retrying(letter.id) is False
        await dlq.resolve(resolved.id, resolved_by="ann")
        assert await dlq.mark_retrying(resolved.id) is False
        kept = await dlq.get(resolved.id)
        assert kept is not None
        assert kept.status is DeadLetterStatus.RESOLVED
        assert await dlq.mark_retrying(uuid4()) is False

    async def test_one_of_concurrent_retries_wins(self, dlq: DLQRepository) -> None:
        letter = await self._add(dlq)
        outcomes = await asyncio.gather(*(dlq.mark_retrying(letter.id) for _ in range(10)))
        assert sorted(outcomes) == [False] * 9 + [True]
        kept = await dlq.get(letter.id)
        assert kept is not None
        assert kept.status is DeadLetterStatus.RETRYING

    async def test_resolve(self, dlq: DLQRepository) -> None:
        failed, retrying = await self._add(dlq), await self._add(dlq)
        await dlq.mark_retrying(retrying.id)
        before = datetime.now(UTC)
        assert await dlq.resolve(failed.id, resolved_by="ann") is True
        after = datetime.now(UTC)
        resolved = await dlq.get(failed.id)
        assert resolved is not None
        assert (resolved.status, resolved.resolved_by) == (DeadLetterStatus.RESOLVED, "ann")
        assert resolved.resolved_at is not None
        assert before <= resolved.resolved_at <= after
        assert (resolved.attempts, resolved.error) == (failed.attempts, failed.error)
        assert await dlq.resolve(failed.id, resolved_by="bob") is False
        assert await dlq.get(failed.id) == resolved
        assert await dlq.resolve(retrying.id, resolved_by="retry") is True
        assert await dlq.resolve(uuid4(), resolved_by="ann") is False

    async def test_one_of_concurrent_resolves_wins(self, dlq: DLQRepository) -> None:
        letter = await self._add(dlq)
        outcomes = await asyncio.gather(
            *(dlq.resolve(letter.id, resolved_by=f"worker {n}") for n in range(10))
        )
        assert sorted(outcomes) == [False] * 9 + [True]
        kept = await dlq.get(letter.id)
        assert kept is not None
        assert kept.resolved_by == f"worker {outcomes.index(True)}"

    async def test_an_error_text_with_nul_and_lone_surrogates_is_kept_storable(
        self, dlq: DLQRepository
    ) -> None:
        # PostgreSQL text refuses NUL, UTF-8 refuses lone surrogates: the letter must still
        # be parked, with those characters replaced by U+FFFD and the rest kept.
        stored = _stored()
        error = _failing_handler(ValueError("bad byte \x00 here, half a pair \udc80 there"))
        letter = await dlq.add("billing", stored, error, 1)
        expected = "ValueError: bad byte \ufffd here, half a pair \ufffd there"
        assert letter.error == expected
        assert expected.partition(": ")[2] in letter.traceback
        assert "\x00" not in letter.traceback
        assert await dlq.get(letter.id) == letter
