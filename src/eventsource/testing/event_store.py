"""`EventStoreContract`: the behaviour every `EventStore` backend must have.

A backend's test module subclasses it and supplies the store::

    class TestMyStore(EventStoreContract):
        async def create_store(self, registry: EventRegistry) -> EventStore:
            return MyStore(..., registry=registry)

The store must start empty and decode events through `registry`, which holds the events of
`eventsource.testing.events`. The suite needs pytest, pytest-asyncio and hypothesis.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventsource._internal.clock import utc_now
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.exceptions import (
    EventIdConflictError,
    EventNotFoundError,
    EventTypeNotFoundError,
    InvalidEventError,
    InvalidPositionError,
    OptimisticLockError,
    SerializationError,
)
from eventsource.stores.interface import (
    EventStore,
    ExpectedVersion,
    Position,
    ReadDirection,
    ReadOptions,
    StoredEvent,
)
from eventsource.testing._feed_reads import FeedReadContract
from eventsource.testing.events import (
    CartCheckedOut,
    ItemAdded,
    ItemLabelled,
    ItemPriced,
    ItemRemoved,
    PriceQuoted,
    ProfileCreated,
    ProfileCreatedV1,
    ProfileCreatedV2,
    TokenIssued,
    UnregisteredEvent,
    WishlistShared,
    contract_registry,
)

__all__ = ["EventStoreContract"]

CART = "Cart"


def _items(count: int, prefix: str = "item") -> list[DomainEvent]:
    return [ItemAdded(name=f"{prefix}-{n}", quantity=n) for n in range(1, count + 1)]


async def _collect(iterator: AsyncIterator[StoredEvent]) -> list[StoredEvent]:
    return [stored async for stored in iterator]


class EventStoreContract(FeedReadContract, ABC):
    """Abstract pytest suite; subclasses implement `create_store`."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_store(self, registry: EventRegistry) -> EventStore:
        """A new, empty store decoding through `registry`."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[EventStore]:
        store = await self.create_store(contract_registry)
        try:
            yield store
        finally:
            await store.close()

    # -- append and read back ----------------------------------------------------------------

    async def test_append_then_read_stream_in_order(self, store: EventStore) -> None:
        cart = uuid4()
        events = _items(3)
        result = await store.append_events(cart, CART, events, ExpectedVersion.NO_STREAM)

        assert result.new_version == 3
        assert not result.already_stored
        assert [e.event_id for e in result.events] == [e.event_id for e in events]
        assert [e.aggregate_version for e in result.events] == [1, 2, 3]
        assert all(e.aggregate_id == cart and e.aggregate_type == CART for e in result.events)
        assert len(result.positions) == 3
        assert list(result.positions) == sorted(set(result.positions))
        assert result.last_position == result.positions[-1]

        stream = await store.get_events(cart)
        assert stream.version == 3
        assert list(stream.events) == list(result.events)
        assert isinstance(stream.events[0], ItemAdded)
        assert [e.name for e in stream.events] == ["item-1", "item-2", "item-3"]  # type: ignore[attr-defined]
        assert await store.get_stream_version(cart) == 3

    async def test_get_events_and_get_events_by_type_as_the_package_guide_calls_them(
        self, store: EventStore
    ) -> None:
        cart, profile = uuid4(), uuid4()
        later = utc_now() + timedelta(hours=1)
        first, second = ItemAdded(name="now"), ItemAdded(name="later", occurred_at=later)
        await store.append_events(cart, CART, [first, second], 0)
        await store.append_events(
            profile, "Profile", [ProfileCreated(first_name="A", last_name="B", email=None)], 0
        )

        # Positional: aggregate_type, from_version (inclusive; 0 reads all), timestamps.
        assert len(await store.get_events(cart, CART, 0)) == 2
        assert [e.event_id for e in (await store.get_events(cart, CART, 2)).events] == [
            second.event_id
        ]
        early = await store.get_events(cart, None, 0, None, later - timedelta(minutes=1))
        assert [e.event_id for e in early.events] == [first.event_id]
        late = await store.get_events(cart, from_timestamp=later)
        assert [e.event_id for e in late.events] == [second.event_id]

        by_type = await store.get_events_by_type(CART)
        assert [e.event_id for e in by_type] == [first.event_id, second.event_id]
        assert [type(e) for e in await store.get_events_by_type("Profile")] == [ProfileCreated]
        recent = await store.get_events_by_type(CART, from_timestamp=later)
        assert [e.event_id for e in recent] == [second.event_id]

    async def test_current_position_includes_an_append_that_returned(
        self, store: EventStore
    ) -> None:
        """Read-your-writes on the feed's end while other readers of the same store are busy:
        once an append returned, `current_position()` is at or past its last position (a
        reader's statement left open must not hand a later statement an older snapshot)."""
        stop = asyncio.Event()

        async def busy_reader() -> None:
            while not stop.is_set():
                await store.current_position()
                await store.get_stream_version(uuid4())

        readers = [asyncio.create_task(busy_reader()) for _ in range(4)]
        try:
            for n in range(150):
                result = await store.append_events(
                    uuid4(), CART, [ItemAdded(name=f"item-{n}")], ExpectedVersion.NO_STREAM
                )
                seen = await store.current_position()
                assert seen >= result.positions[-1], (
                    f"append {n} returned {result.positions[-1]}, current_position() {seen}"
                )
        finally:
            stop.set()
            await asyncio.gather(*readers)

    async def test_unknown_stream_is_empty(self, store: EventStore) -> None:
        missing = uuid4()
        stream = await store.get_events(missing)
        assert stream.is_empty
        assert stream.version == 0
        assert await store.get_stream_version(missing) == 0
        assert await _collect(store.read_stream(missing)) == []

    async def test_streams_are_independent(self, store: EventStore) -> None:
        a, b = uuid4(), uuid4()
        await store.append_events(a, CART, _items(2, "a"), 0)
        await store.append_events(b, CART, _items(1, "b"), 0)
        await store.append_events(a, CART, [ItemRemoved(name="a-1")], 2)
        assert await store.get_stream_version(a) == 3
        assert await store.get_stream_version(b) == 1
        assert [type(e) for e in (await store.get_events(a)).events] == [
            ItemAdded,
            ItemAdded,
            ItemRemoved,
        ]

    async def test_stored_events_keep_their_envelope(self, store: EventStore) -> None:
        cart, tenant = uuid4(), uuid4()
        cause = ItemAdded(name="cause")
        event = (
            ItemAdded(name="x", tenant_id=tenant).with_causation(cause).with_metadata(user="ann")
        )
        await store.append_events(cart, CART, [event], 0)
        (read,) = (await store.get_events(cart)).events
        assert read.event_id == event.event_id
        assert read.occurred_at == event.occurred_at
        assert read.tenant_id == tenant
        assert read.correlation_id == cause.correlation_id
        assert read.causation_id == cause.event_id
        assert read.metadata == {"user": "ann"}

    async def test_events_read_back_can_be_copied_with_changes(self, store: EventStore) -> None:
        """What a process manager does with an event it read: copy it with other metadata,
        causation or fields (`with_metadata`, `with_causation`, `model_copy(update=...)`,
        shallow or deep), and what an API does: serialize it without unset fields;
        whichever read it came from."""
        cart = uuid4()
        cause = ItemAdded(name="cause")
        await store.append_events(cart, CART, [ItemAdded(name="x").with_metadata(k=1)], 0)
        (loaded,) = (await store.get_events(cart)).events
        (streamed,) = [s.event async for s in store.read_stream(cart)]
        fed = [s.event async for s in store.read_all() if s.aggregate_id == cart]
        for read in [loaded, streamed, *fed]:
            assert isinstance(read, ItemAdded)
            assert read.with_metadata(user="ann").metadata == {"k": 1, "user": "ann"}
            caused = read.with_causation(cause)
            assert (caused.causation_id, caused.correlation_id) == (
                cause.event_id,
                cause.correlation_id,
            )
            for deep in (False, True):
                renamed = read.model_copy(update={"name": "y"}, deep=deep)
                assert renamed.name == "y"
                assert "name" in renamed.model_fields_set
                assert renamed.event_id == read.event_id
            assert read.name == "x"  # the event read is unchanged
            assert read.metadata == {"k": 1}
            # what an API returning events with `response_model_exclude_unset` serializes
            assert read.model_dump(exclude_unset=True)["name"] == "x"
            assert '"name":"x"' in read.model_dump_json(exclude_unset=True)

    async def test_events_with_computed_fields_read_back(self, store: EventStore) -> None:
        """A `@computed_field` is derived from the other fields: the event reads back (its
        stream stays loadable) with the value computed again, singly and in a batch."""
        cart = uuid4()
        one = ItemPriced(name="pen", unit_cents=150, quantity=2)
        batch = [ItemPriced(name=f"n{n}", unit_cents=10, quantity=n) for n in range(1, 4)]
        first = await store.append_events(cart, CART, [one], 0)
        second = await store.append_events(cart, CART, batch, 1)
        read = (await store.get_events(cart)).events
        appended = [*first.events, *second.events]
        # (dumps include the computed values)
        assert [e.model_dump() for e in read] == [e.model_dump() for e in appended]
        assert [e.total_cents for e in read if isinstance(e, ItemPriced)] == [300, 10, 20, 30]
        fed = [s.event async for s in store.read_all() if s.aggregate_id == cart]
        assert [e.event_id for e in fed] == [e.event_id for e in read]

    async def test_events_with_aliased_fields_read_back(self, store: EventStore) -> None:
        """Fields with aliases (one field's own, or every field's from an alias generator)
        are made by alias and read back, singly and in a batch."""
        cart = uuid4()
        labelled = ItemLabelled(itemName="pen", label="blue")
        shared = [WishlistShared(sharedWith=f"friend {n}") for n in range(3)]
        first = await store.append_events(cart, CART, [labelled], 0)
        second = await store.append_events(cart, CART, shared, 1)
        read = (await store.get_events(cart)).events
        appended = [*first.events, *second.events]
        assert [e.model_dump() for e in read] == [e.model_dump() for e in appended]
        fed = [s.event async for s in store.read_all() if s.aggregate_id == cart]
        assert [e.model_dump() for e in fed] == [e.model_dump() for e in appended]
        for event in appended:
            assert type(event).from_dict(event.to_dict()) == event

    async def test_classes_whose_json_does_not_read_back_are_refused(
        self, store: EventStore
    ) -> None:
        """An event class whose JSON could not be read back (a field without a default left
        out of it, a serializer writing what the field refuses) is refused with a clear
        error before anything is stored, instead of making its stream unreadable."""
        cart = uuid4()
        for event in [TokenIssued(token="secret", user="ann"), PriceQuoted(cents=150)]:
            with pytest.raises(SerializationError, match="cannot be stored"):
                await store.append_events(cart, CART, [ItemAdded(name="a"), event], 0)
        assert await store.get_stream_version(cart) == 0
        await store.append_events(cart, CART, [ItemAdded(name="a")], 0)  # the store still works
        assert len((await store.get_events(cart)).events) == 1

    async def test_occurred_at_reads_back_exactly_whatever_the_time(
        self, store: EventStore
    ) -> None:
        """Every time an event can hold reads back to the microsecond: the first and the
        last instant, either side of 1970 and of 2106 (where a float of epoch seconds stops
        carrying microseconds exactly), alone and mixed in one batch."""
        times = [
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(1833, 6, 1, 12, 0, 0, 123457, tzinfo=UTC),
            datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC),
            datetime(2026, 12, 7, 21, 6, 0, 654321, tzinfo=UTC),
            datetime(2106, 2, 7, 6, 28, 15, 999999, tzinfo=UTC),
            datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC),
            datetime(2500, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ]
        cart = uuid4()
        for n, at in enumerate(times):
            await store.append_events(cart, CART, [ItemAdded(name=f"t{n}", occurred_at=at)], n)
        mixed = [ItemAdded(name=f"m{n}", occurred_at=at) for n, at in enumerate(times)]
        await store.append_events(cart, CART, mixed, len(times))
        read = (await store.get_events(cart)).events
        assert [e.occurred_at for e in read] == times + times
        fed = [s.event.occurred_at async for s in store.read_all() if s.aggregate_id == cart]
        assert fed == times + times

    async def test_batches_keep_each_events_envelope(self, store: EventStore) -> None:
        """Within one batch some envelope values are shared and others differ (a store may
        send shared ones once): every event reads back with its own."""
        cart, tenant, other = uuid4(), uuid4(), uuid4()
        cause = ItemAdded(name="cause")
        mixed: list[DomainEvent] = [
            ItemAdded(name="a"),
            ItemAdded(name="b", tenant_id=tenant).with_causation(cause).with_metadata(k=1),
            ItemRemoved(name="a"),
            ItemAdded(name="c", tenant_id=other, correlation_id=cause.event_id),
        ]
        shared: list[DomainEvent] = [
            ItemAdded(name=f"d{n}", tenant_id=tenant).with_causation(cause) for n in range(3)
        ]
        first = await store.append_events(cart, CART, mixed, 0)
        second = await store.append_events(cart, CART, shared, 4)
        appended = [*first.events, *second.events]
        read = (await store.get_events(cart)).events
        assert [e.model_dump() for e in read] == [e.model_dump() for e in appended]
        assert [e.correlation_id for e in read[:2]] == [
            mixed[0].event_id,
            cause.correlation_id,
        ]

    async def test_event_that_names_another_stream_is_refused(self, store: EventStore) -> None:
        cart = uuid4()
        foreign = ItemAdded(name="x", aggregate_id=uuid4())
        with pytest.raises(InvalidEventError):
            await store.append_events(cart, CART, [ItemAdded(name="ok"), foreign], 0)
        assert await store.get_stream_version(cart) == 0

    @pytest.mark.parametrize(
        ("make", "named"),
        [
            (lambda: ItemAdded(name="x").with_metadata(ratio=float("nan")), "metadata.ratio"),
            (lambda: ItemAdded(name="x").with_metadata(top=float("inf")), "metadata.top"),
            (lambda: ItemAdded(name="x").with_metadata(low=[1, -float("inf")]), "metadata.low[1]"),
            (lambda: ItemAdded(name="nul\x00inside"), "name"),
            (lambda: ItemAdded(name="x").with_metadata(**{"k\x00": 1}), "metadata.k"),
        ],
        ids=["nan", "infinity", "nested-negative-infinity", "nul-in-string", "nul-in-key"],
    )
    async def test_values_that_cannot_be_read_back_are_refused_before_storing(
        self, store: EventStore, make: Callable[[], DomainEvent], named: str
    ) -> None:
        # What a store accepts it must read back, alike on every backend: JSON has no NaN or
        # infinity (written as null they read back wrong or not at all), PostgreSQL refuses
        # U+0000. So the whole append fails up front and nothing of the batch is stored.
        cart = uuid4()
        before = await store.current_position()
        with pytest.raises(SerializationError) as caught:
            await store.append_events(cart, CART, [ItemAdded(name="ok"), make()], 0)
        assert named in str(caught.value)
        assert await store.get_stream_version(cart) == 0
        assert await store.current_position() == before
        # The stream stays usable: the next (valid) append starts it at version 1.
        result = await store.append_events(cart, CART, [ItemAdded(name="ok")], 0)
        assert result.new_version == 1

    async def test_nul_in_the_aggregate_type_is_refused_before_storing(
        self, store: EventStore
    ) -> None:
        cart = uuid4()
        with pytest.raises(SerializationError, match="aggregate_type"):
            await store.append_events(cart, "Ca\x00rt", [ItemAdded(name="x")], 0)
        assert await store.get_stream_version(cart) == 0

    async def test_text_that_looks_like_unstorable_values_round_trips(
        self, store: EventStore
    ) -> None:
        cart = uuid4()
        tricky = "NaN -Infinity \\u0000 \\\\u0000 \u00e9\u4e2d\U0001f600"
        event = ItemAdded(name=tricky).with_metadata(note="Infinity", value=0.5)
        await store.append_events(cart, CART, [event], 0)
        (read,) = (await store.get_events(cart)).events
        assert read.name == tricky  # type: ignore[attr-defined]
        assert read.metadata == {"note": "Infinity", "value": 0.5}

    # -- expected version ----------------------------------------------------------------------

    async def test_exact_expected_version(self, store: EventStore) -> None:
        cart = uuid4()
        await store.append_events(cart, CART, _items(2), 0)
        await store.append_events(cart, CART, [CartCheckedOut()], 2)
        with pytest.raises(OptimisticLockError) as caught:
            await store.append_events(cart, CART, [ItemRemoved(name="late")], 2)
        assert caught.value.aggregate_id == cart
        assert caught.value.expected_version == 2
        assert type(caught.value.expected_version) is int
        assert caught.value.actual_version == 3
        assert str(cart) in str(caught.value)
        assert await store.get_stream_version(cart) == 3

    async def test_no_stream(self, store: EventStore) -> None:
        cart = uuid4()
        await store.append_events(cart, CART, _items(1), ExpectedVersion.NO_STREAM)
        with pytest.raises(OptimisticLockError) as caught:
            await store.append_events(cart, CART, _items(1, "again"), ExpectedVersion.NO_STREAM)
        assert caught.value.expected_version is ExpectedVersion.NO_STREAM
        assert caught.value.actual_version == 1
        assert "expected version NO_STREAM" in str(caught.value)
        assert await store.get_stream_version(cart) == 1

    async def test_stream_exists(self, store: EventStore) -> None:
        cart = uuid4()
        with pytest.raises(OptimisticLockError) as caught:
            await store.append_events(cart, CART, _items(1), ExpectedVersion.STREAM_EXISTS)
        assert caught.value.expected_version is ExpectedVersion.STREAM_EXISTS
        assert caught.value.actual_version == 0
        await store.append_events(cart, CART, _items(1), ExpectedVersion.NO_STREAM)
        result = await store.append_events(
            cart, CART, _items(1, "more"), ExpectedVersion.STREAM_EXISTS
        )
        assert result.new_version == 2

    async def test_any_version(self, store: EventStore) -> None:
        cart = uuid4()
        first = await store.append_events(cart, CART, _items(2), ExpectedVersion.ANY)
        second = await store.append_events(cart, CART, _items(2, "more"), ExpectedVersion.ANY)
        assert (first.new_version, second.new_version) == (2, 4)
        assert [e.aggregate_version for e in second.events] == [3, 4]

    async def test_invalid_expected_version(self, store: EventStore) -> None:
        with pytest.raises(InvalidEventError):
            await store.append_events(uuid4(), CART, _items(1), -42)
        with pytest.raises(InvalidEventError):
            ExpectedVersion.exact(-1)

    @pytest.mark.parametrize("wrong", ["2", 2.0, True, None])
    async def test_expected_version_of_a_wrong_type_is_refused(
        self, store: EventStore, wrong: object
    ) -> None:
        cart = uuid4()
        await store.append_events(cart, CART, _items(2), 0)
        with pytest.raises(InvalidEventError, match="expected_version"):
            await store.append_events(cart, CART, _items(1), wrong)  # type: ignore[arg-type]
        assert (await store.get_events(cart)).version == 2

    async def test_empty_append_only_checks_the_version(self, store: EventStore) -> None:
        cart = uuid4()
        await store.append_events(cart, CART, _items(2), 0)
        result = await store.append_events(cart, CART, [], 2)
        assert result.new_version == 2
        assert result.positions == ()
        with pytest.raises(OptimisticLockError):
            await store.append_events(cart, CART, [], 1)

    # -- atomicity and idempotency -------------------------------------------------------------

    async def test_failed_append_stores_nothing(self, store: EventStore) -> None:
        cart = uuid4()
        await store.append_events(cart, CART, _items(1), 0)
        batch = _items(5, "batch")
        with pytest.raises(OptimisticLockError):
            await store.append_events(cart, CART, batch, 0)
        assert await store.get_stream_version(cart) == 1
        for event in batch:
            assert not await store.event_exists(event.event_id)

    async def test_retried_append_is_idempotent(self, store: EventStore) -> None:
        cart = uuid4()
        batch = _items(3)
        first = await store.append_events(cart, CART, batch, 0)
        # The same events again, as a client retrying after a lost reply would send them.
        again = await store.append_events(cart, CART, batch, 0)
        assert again.already_stored
        assert again.new_version == first.new_version
        assert again.positions == first.positions
        assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
        # Retried with the stamped events of the result, and with another expected version.
        third = await store.append_events(cart, CART, first.events, ExpectedVersion.ANY)
        assert third.already_stored
        assert third.positions == first.positions
        assert await store.get_stream_version(cart) == 3
        assert len(await _collect(store.read_all())) == 3

    async def test_appends_are_traced_and_measured(self, store: EventStore) -> None:
        pytest.importorskip("opentelemetry.sdk")
        from eventsource import observability as o
        from eventsource.testing.telemetry import capture_telemetry

        cart = uuid4()
        batch = [*_items(2), CartCheckedOut()]
        with capture_telemetry() as captured:
            first = await store.append_events(cart, CART, batch, 0)
            with pytest.raises(OptimisticLockError):
                await store.append_events(cart, CART, _items(1, "late"), 0)
            await store.append_events(cart, CART, batch, 0)  # a retry: counted once

        ok, conflict, retry = captured.spans(f"append {CART}")
        assert dict(ok.attributes or {}) == {
            o.STORE: store.backend,
            o.STREAM_ID: str(cart),
            o.AGGREGATE_TYPE: CART,
            o.EXPECTED_VERSION: 0,
            o.EVENT_COUNT: 3,
            o.EVENT_TYPE: ("CartCheckedOut", "ItemAdded"),
            o.VERSION: 3,
            o.POSITION: str(first.positions[-1]),
        }
        assert ok.status.is_ok
        assert not conflict.status.is_ok
        assert conflict.events[0].attributes["exception.type"].endswith("OptimisticLockError")
        assert (retry.attributes or {})["eventsource.already_stored"] is True
        ours = {o.STORE: store.backend, o.AGGREGATE_TYPE: CART}
        assert captured.value(o.APPEND_DURATION_METRIC, ours) == 3
        failed = {**ours, "error.type": "OptimisticLockError"}
        assert captured.value(o.APPEND_DURATION_METRIC, failed) == 1
        assert captured.value(o.EVENTS_APPENDED_METRIC, {o.EVENT_TYPE: "ItemAdded"}) == 2
        assert captured.value(o.EVENTS_APPENDED_METRIC, {o.EVENT_TYPE: "CartCheckedOut"}) == 1

    async def test_reused_event_id_with_other_content_conflicts(self, store: EventStore) -> None:
        cart = uuid4()
        original = ItemAdded(name="apple")
        await store.append_events(cart, CART, [original], 0)
        impostor = ItemAdded(event_id=original.event_id, name="pear")
        with pytest.raises(EventIdConflictError) as caught:
            await store.append_events(cart, CART, [impostor], ExpectedVersion.ANY)
        assert caught.value.event_id == original.event_id
        other_stream = uuid4()
        with pytest.raises(EventIdConflictError):
            await store.append_events(other_stream, CART, [original], 0)
        assert await store.get_stream_version(other_stream) == 0

    async def test_partly_stored_batch_conflicts(self, store: EventStore) -> None:
        cart = uuid4()
        stored = ItemAdded(name="stored")
        await store.append_events(cart, CART, [stored], 0)
        fresh = ItemAdded(name="fresh")
        with pytest.raises(EventIdConflictError):
            await store.append_events(cart, CART, [stored, fresh], ExpectedVersion.ANY)
        assert not await store.event_exists(fresh.event_id)
        assert await store.get_stream_version(cart) == 1

    async def test_duplicate_id_within_a_batch_is_refused(self, store: EventStore) -> None:
        event = ItemAdded(name="twice")
        with pytest.raises(InvalidEventError):
            await store.append_events(uuid4(), CART, [event, event], 0)
        assert not await store.event_exists(event.event_id)

    # -- concurrency ---------------------------------------------------------------------------

    async def test_concurrent_appenders_exactly_one_wins_per_version(
        self, store: EventStore
    ) -> None:
        cart = uuid4()
        writers, rounds = 12, 5
        winners: list[int] = []
        for version in range(rounds):

            async def attempt(writer: int, expected: int = version) -> bool:
                event = ItemAdded(name=f"w{writer}-v{expected}")
                try:
                    await store.append_events(cart, CART, [event, CartCheckedOut()], expected * 2)
                except OptimisticLockError:
                    return False
                return True

            outcomes = await asyncio.gather(*(attempt(w) for w in range(writers)))
            winners.append(sum(outcomes))
        assert winners == [1] * rounds
        stream = await store.get_events(cart)
        assert [e.aggregate_version for e in stream.events] == list(range(1, rounds * 2 + 1))

    async def test_concurrent_any_version_appends_all_land_without_gaps(
        self, store: EventStore
    ) -> None:
        cart = uuid4()
        batches = [_items(2, f"writer{w}") for w in range(16)]
        results = await asyncio.gather(
            *(store.append_events(cart, CART, batch, ExpectedVersion.ANY) for batch in batches)
        )
        assert sorted(r.new_version for r in results) == list(range(2, 33, 2))
        stream = await store.get_events(cart)
        assert [e.aggregate_version for e in stream.events] == list(range(1, 33))
        by_id = {e.event_id: e for e in stream.events}
        for batch, result in zip(batches, results, strict=True):
            # each batch landed whole and contiguous, at the versions its result reports
            versions = [by_id[e.event_id].aggregate_version for e in batch]
            assert versions == [result.new_version - 1, result.new_version]

    async def test_concurrent_writers_on_many_streams_lose_nothing(self, store: EventStore) -> None:
        streams = [uuid4() for _ in range(8)]
        per_stream = 10

        async def writer(stream: UUID) -> None:
            for n in range(per_stream):
                await store.append_events(stream, CART, [ItemAdded(name=f"{n}")], n)

        await asyncio.gather(*(writer(s) for s in streams))
        seen = await _collect(store.read_all())
        assert len(seen) == len(streams) * per_stream
        assert len({s.event_id for s in seen}) == len(seen)
        for stream in streams:
            versions = [s.version for s in seen if s.aggregate_id == stream]
            assert versions == list(range(1, per_stream + 1))

    # -- reading streams -----------------------------------------------------------------------

    async def test_read_stream_ranges_and_directions(self, store: EventStore) -> None:
        cart = uuid4()
        await store.append_events(cart, CART, _items(6), 0)

        async def versions(**options: object) -> list[int]:
            read = store.read_stream(cart, ReadOptions(**options))  # type: ignore[arg-type]
            return [s.version for s in await _collect(read)]

        assert await versions() == [1, 2, 3, 4, 5, 6]
        assert await versions(from_version=3) == [3, 4, 5, 6]
        assert await versions(from_version=2, to_version=4) == [2, 3, 4]
        assert await versions(direction=ReadDirection.BACKWARD) == [6, 5, 4, 3, 2, 1]
        assert await versions(direction=ReadDirection.BACKWARD, from_version=2, to_version=4) == [
            4,
            3,
            2,
        ]
        assert await versions(limit=2) == [1, 2]
        assert await versions(direction=ReadDirection.BACKWARD, limit=2) == [6, 5]
        assert await versions(batch_size=1) == [1, 2, 3, 4, 5, 6]
        assert await versions(batch_size=4, limit=5) == [1, 2, 3, 4, 5]
        tail = await store.get_events(cart, from_version=5)
        assert [e.aggregate_version for e in tail.events] == [5, 6]
        assert tail.version == 6

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        backward=st.booleans(),
        low=st.integers(1, 9),
        high=st.none() | st.integers(0, 9),
        limit=st.none() | st.integers(0, 4),
        batch=st.integers(1, 4),
        removed_only=st.booleans(),
    )
    async def test_read_stream_pages_match_a_model(
        self,
        store: EventStore,
        backward: bool,
        low: int,
        high: int | None,
        limit: int | None,
        batch: int,
        removed_only: bool,
    ) -> None:
        """Any range, direction, limit, filter and page size reads what a list slice says."""
        cart = uuid4()
        kinds = [ItemAdded, ItemRemoved, ItemAdded, ItemAdded, ItemRemoved, ItemAdded, ItemAdded]
        await store.append_events(
            cart, CART, [kind(name=f"n{i}") for i, kind in enumerate(kinds)], 0
        )
        expected = [
            version
            for version, kind in enumerate(kinds, start=1)
            if version >= low
            and (high is None or version <= high)
            and (not removed_only or kind is ItemRemoved)
        ]
        if backward:
            expected.reverse()
        if limit is not None:
            expected = expected[:limit]
        options = ReadOptions(
            direction=ReadDirection.BACKWARD if backward else ReadDirection.FORWARD,
            from_version=low,
            to_version=high,
            limit=limit,
            batch_size=batch,
            event_types={"ItemRemoved"} if removed_only else None,
        )
        read = await _collect(store.read_stream(cart, options))
        assert [s.version for s in read] == expected
        # A load's read: the same events, decoded, in pages (none of them empty).
        pages = [list(page) async for page in store.read_stream_events(cart, options)]
        assert all(pages)
        assert [event for page in pages for event in page] == [s.event for s in read]

    async def test_read_stream_filters(self, store: EventStore) -> None:
        cart = uuid4()
        await store.append_events(cart, CART, [*_items(2), ItemRemoved(name="item-1")], 0)
        removed = store.read_stream(cart, ReadOptions(event_types=frozenset({"ItemRemoved"})))
        assert [s.version for s in await _collect(removed)] == [3]
        assert (await store.get_events(cart, "SomethingElse")).is_empty
        assert len(await store.get_events(cart, CART)) == 3

    # -- the global feed -----------------------------------------------------------------------

    async def test_read_all_in_commit_order_and_resumable(self, store: EventStore) -> None:
        appended: list[UUID] = []
        for n in range(7):
            events = _items(n % 3 + 1, f"s{n}")
            await store.append_events(uuid4(), CART, events, 0)
            appended.extend(e.event_id for e in events)

        everything = await _collect(store.read_all())
        assert [s.event_id for s in everything] == appended
        positions = [s.position for s in everything]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)

        # Resume page by page from the last position seen, through its text form.
        resumed: list[UUID] = []
        token: str | None = None
        while True:
            after = Position.parse(token) if token is not None else None
            page = await _collect(store.read_all(ReadOptions(after=after, limit=4)))
            if not page:
                break
            resumed.extend(s.event_id for s in page)
            token = str(page[-1].position)
        assert resumed == appended

        backward = await _collect(store.read_all(ReadOptions(direction=ReadDirection.BACKWARD)))
        assert [s.event_id for s in backward] == appended[::-1]
        before = await _collect(
            store.read_all(
                ReadOptions(direction=ReadDirection.BACKWARD, after=positions[3], limit=2)
            )
        )
        assert [s.event_id for s in before] == [appended[2], appended[1]]
        small_pages = await _collect(store.read_all(ReadOptions(batch_size=2)))
        assert [s.event_id for s in small_pages] == appended

    async def test_read_all_sees_later_appends_after_resuming(self, store: EventStore) -> None:
        await store.append_events(uuid4(), CART, _items(2), 0)
        first = await _collect(store.read_all())
        late = _items(2, "late")
        await store.append_events(uuid4(), CART, late, 0)
        rest = await _collect(store.read_all(ReadOptions(after=first[-1].position)))
        assert [s.event_id for s in rest] == [e.event_id for e in late]

    async def test_read_all_filters(self, store: EventStore) -> None:
        tenant_a, tenant_b = uuid4(), uuid4()
        cart_a, cart_b, order = uuid4(), uuid4(), uuid4()
        await store.append_events(cart_a, CART, [ItemAdded(name="a", tenant_id=tenant_a)], 0)
        await store.append_events(cart_b, CART, [ItemRemoved(name="b", tenant_id=tenant_b)], 0)
        await store.append_events(order, "Order", [CartCheckedOut(tenant_id=tenant_a)], 0)

        async def ids(**options: object) -> set[UUID]:
            read = store.read_all(ReadOptions(**options))  # type: ignore[arg-type]
            return {s.aggregate_id for s in await _collect(read)}

        assert await ids(aggregate_type=CART) == {cart_a, cart_b}
        assert await ids(aggregate_type="Order") == {order}
        assert await ids(tenant_id=tenant_a) == {cart_a, order}
        assert await ids(event_types=frozenset({"ItemRemoved", "CartCheckedOut"})) == {
            cart_b,
            order,
        }
        assert await ids(event_types=[ItemAdded]) == {cart_a}
        assert await ids(event_types="ItemRemoved") == {cart_b}
        assert await ids(event_types=frozenset()) == set()
        assert await ids(tenant_id=tenant_b, aggregate_type="Order") == set()

    async def test_read_all_time_range(self, store: EventStore) -> None:
        old, new = ItemAdded(name="old"), ItemAdded(name="new")
        old = old.model_copy(update={"occurred_at": new.occurred_at - timedelta(hours=2)})
        await store.append_events(uuid4(), CART, [old], 0)
        await store.append_events(uuid4(), CART, [new], 0)
        cutoff = new.occurred_at - timedelta(hours=1)
        recent = await _collect(store.read_all(ReadOptions(from_timestamp=cutoff)))
        assert [s.event_id for s in recent] == [new.event_id]
        earlier = await _collect(store.read_all(ReadOptions(to_timestamp=cutoff)))
        assert [s.event_id for s in earlier] == [old.event_id]

    @settings(
        max_examples=25,
        deadline=None,
        # One store serves all examples (each uses new streams and reads after the newest
        # position), and every backend subclass runs this same method: both are intended.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        plan=st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, 4), st.booleans()),
            min_size=1,
            max_size=12,
        ),
        page=st.integers(1, 5),
    )
    async def test_feed_matches_a_model_of_the_appends(
        self, store: EventStore, plan: list[tuple[int, int, bool]], page: int
    ) -> None:
        """Random appends, some with a stale expected version, against a plain model."""
        newest = await _collect(
            store.read_all(ReadOptions(direction=ReadDirection.BACKWARD, limit=1))
        )
        start = newest[0].position if newest else None
        streams = [uuid4() for _ in range(4)]
        versions = dict.fromkeys(streams, 0)
        expected_feed: list[UUID] = []
        for index, count, stale in plan:
            stream = streams[index]
            batch = _items(count)
            if stale and versions[stream] > 0:
                with pytest.raises(OptimisticLockError):
                    await store.append_events(stream, CART, batch, versions[stream] - 1)
                continue
            result = await store.append_events(stream, CART, batch, versions[stream])
            versions[stream] += count
            assert result.new_version == versions[stream]
            expected_feed.extend(e.event_id for e in batch)

        feed: list[StoredEvent] = []
        after = start
        while page_events := await _collect(store.read_all(ReadOptions(after=after, limit=page))):
            feed.extend(page_events)
            after = page_events[-1].position
        assert [s.event_id for s in feed] == expected_feed
        for stream in streams:
            assert [s.version for s in feed if s.aggregate_id == stream] == list(
                range(1, versions[stream] + 1)
            )
            assert await store.get_stream_version(stream) == versions[stream]

    async def test_position_tokens(self, store: EventStore) -> None:
        result = await store.append_events(uuid4(), CART, _items(2), 0)
        first, second = result.positions
        assert first < second
        assert Position.parse(str(second)) == second
        with pytest.raises(InvalidPositionError):
            Position.parse("not a position")

    async def test_current_position_is_the_end_of_the_feed(self, store: EventStore) -> None:
        assert await store.current_position() == Position.START
        await store.append_events(uuid4(), CART, _items(2), 0)
        result = await store.append_events(uuid4(), CART, _items(3), 0)
        end = await store.current_position()
        assert end == result.last_position
        assert await _collect(store.read_all(ReadOptions(after=end))) == []
        later = await store.append_events(uuid4(), CART, _items(1), 0)
        assert [s.position for s in await _collect(store.read_all(ReadOptions(after=end)))] == [
            later.positions[0]
        ]

    async def test_listen_signals_appends(self, store: EventStore) -> None:
        async with store.listen() as signal:
            await store.append_events(uuid4(), CART, _items(2), 0)
            async with asyncio.timeout(5):
                await signal.wait()
            assert signal.received >= 1
        # after the block, appends no longer reach that signal object
        before = signal.received
        await store.append_events(uuid4(), CART, _items(1), 0)
        await asyncio.sleep(0.05)
        assert signal.received == before

    # -- lookups and decoding --------------------------------------------------------------------

    async def test_event_lookup(self, store: EventStore) -> None:
        cart = uuid4()
        event = ItemAdded(name="find me")
        result = await store.append_events(cart, CART, [event], 0)
        assert await store.event_exists(event.event_id)
        assert not await store.event_exists(uuid4())
        found = await store.get_event(event.event_id)
        assert found.event == result.events[0]
        assert found.position == result.positions[0]
        assert found.version == 1
        with pytest.raises(EventNotFoundError):
            await store.get_event(uuid4())

    async def test_old_schema_versions_are_upcast_on_read(self, store: EventStore) -> None:
        profile = uuid4()
        written = [
            ProfileCreatedV1(name="Ada Lovelace"),
            ProfileCreatedV2(first_name="Grace", last_name="Hopper"),
            ProfileCreated(first_name="Alan", last_name="Turing", email="alan@example.org"),
        ]
        await store.append_events(profile, "Profile", written, 0)
        read = (await store.get_events(profile)).events
        assert all(type(e) is ProfileCreated for e in read)
        assert [e.event_version for e in read] == [3, 3, 3]
        assert [(e.first_name, e.last_name, e.email) for e in read] == [  # type: ignore[attr-defined]
            ("Ada", "Lovelace", None),
            ("Grace", "Hopper", None),
            ("Alan", "Turing", "alan@example.org"),
        ]
        assert [e.event_id for e in read] == [e.event_id for e in written]
        via_feed = await _collect(store.read_all(ReadOptions(aggregate_type="Profile")))
        assert [s.event for s in via_feed] == list(read)

    async def test_unknown_event_type_fails_clearly_on_read(self, store: EventStore) -> None:
        stream = uuid4()
        await store.append_events(stream, CART, [UnregisteredEvent(note="x")], 0)
        with pytest.raises(EventTypeNotFoundError) as caught:
            await store.get_events(stream)
        assert caught.value.event_type == "UnregisteredEvent"
        # The stored event is still there, untouched, for code that knows its type.
        assert await store.get_stream_version(stream) == 1
