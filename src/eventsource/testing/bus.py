"""`EventBusContract`: the behaviour every `EventBus` backend must have, on a real broker.

A backend's test module subclasses it, gives each test its own broker namespace (key prefix,
exchange, topic names) and says how to make a bus and how to cut its connections::

    class TestMyBus(EventBusContract):
        async def create_bus(self, group: str, **settings: Any) -> EventBus:
            return MyEventBus(MyConfig(prefix=self.prefix, consumer_group=group, **settings),
                              registry=contract_registry)

        async def drop_connections(self, bus: EventBus) -> None:
            ...  # what a network failure or broker restart does to `bus`

`settings` are `EventBusConfig` fields (`max_attempts`, `retry_delay`, ...). Every bus made in
one test must reach the same namespace, and decode with `contract_registry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import pytest

from eventsource.bus.interface import EventBus
from eventsource.events.base import DomainEvent
from eventsource.exceptions import ConfigurationError
from eventsource.testing.events import CartCheckedOut, ItemAdded, ItemRemoved, UnregisteredEvent

__all__ = ["EventBusContract", "Recorder"]

MakeBus = Callable[..., Awaitable[EventBus]]


class Recorder:
    """A handler that keeps what it receives; `fail_times` makes it raise on early attempts."""

    def __init__(self, *, fail_times: int = 0, fail_for: set[UUID] | None = None) -> None:
        self.events: list[DomainEvent] = []
        self.attempts: Counter[UUID] = Counter()
        self.fail_times = fail_times
        self.fail_for = fail_for

    async def handle(self, event: DomainEvent) -> None:
        self.attempts[event.event_id] += 1
        failing = self.fail_for is None or event.event_id in self.fail_for
        if failing and self.attempts[event.event_id] <= self.fail_times:
            raise RuntimeError(f"planned failure {self.attempts[event.event_id]}")
        self.events.append(event)

    @property
    def ids(self) -> list[UUID]:
        return [event.event_id for event in self.events]


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    """Wait until `check()` holds; fail the test with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


def cart_events(carts: int, per_cart: int) -> list[DomainEvent]:
    """`per_cart` events for each of `carts` aggregates, interleaved across the aggregates."""
    ids = [uuid4() for _ in range(carts)]
    return [
        ItemAdded(name=f"item-{version}").attached(cart, "Cart", version)
        for version in range(1, per_cart + 1)
        for cart in ids
    ]


def _has(recorder: Recorder, count: int) -> bool:
    return len(recorder.events) >= count


def _versions_by_cart(events: Sequence[DomainEvent]) -> dict[UUID, list[int]]:
    versions: dict[UUID, list[int]] = {}
    for event in events:
        versions.setdefault(event.aggregate_id, []).append(event.aggregate_version)
    return versions


class EventBusContract(ABC):
    """Abstract pytest suite; subclasses implement `create_bus` and `drop_connections`."""

    pytestmark = pytest.mark.asyncio

    timeout: float = 30.0
    """Seconds a test waits for deliveries before it fails."""

    routes_by_type: bool = False
    """The broker routes to a group only the event types its consumers subscribed to
    (RabbitMQ binds the group's queue per type): other types never arrive, so none is skipped."""

    @abstractmethod
    async def create_bus(self, group: str, **settings: Any) -> EventBus:
        """A new, not yet consuming bus: one consumer of `group` in this test's namespace."""

    @abstractmethod
    async def drop_connections(self, bus: EventBus) -> None:
        """Cut `bus`'s broker connections as a network failure or broker restart would."""

    @pytest.fixture
    async def make_bus(self) -> AsyncIterator[MakeBus]:
        made: list[EventBus] = []

        async def make(group: str = "main", **settings: Any) -> EventBus:
            settings.setdefault("retry_delay", 0.05)
            settings.setdefault("retry_delay_max", 0.2)
            bus = await self.create_bus(group, **settings)
            made.append(bus)
            return bus

        yield make
        for bus in made:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.shutdown(timeout=5), 20)

    # -- delivery ------------------------------------------------------------------------

    async def test_handlers_get_the_events_of_their_types(self, make_bus: MakeBus) -> None:
        bus = await make_bus()
        added, removed = Recorder(), Recorder()
        bus.subscribe(ItemAdded, added)
        bus.subscribe(ItemRemoved, removed)
        await bus.start_consuming()
        cart = uuid4()
        events = [
            ItemAdded(name="apple", quantity=3).attached(cart, "Cart", 1),
            CartCheckedOut().attached(cart, "Cart", 2),
            ItemRemoved(name="apple").attached(cart, "Cart", 3),
        ]
        await bus.publish(events)
        skips = 0 if self.routes_by_type else 1  # nobody here wants CartCheckedOut
        await eventually(
            lambda: bus.stats.handled + bus.stats.skipped >= 2 + skips, self.timeout, "events"
        )
        assert added.events == [events[0]]
        assert removed.events == [events[2]]
        assert bus.stats.published == 3
        assert bus.stats.skipped == skips

    async def test_wildcard_functions_and_subscribers(self, make_bus: MakeBus) -> None:
        bus = await make_bus()
        everything: list[DomainEvent] = []
        bus.subscribe_to_all_events(everything.append)  # a plain sync function

        class RemovalsOnly:
            def __init__(self) -> None:
                self.seen: list[DomainEvent] = []

            def subscribed_to(self) -> Sequence[type[DomainEvent]]:
                return [ItemRemoved]

            async def handle(self, event: DomainEvent) -> None:
                self.seen.append(event)

        removals = RemovalsOnly()
        bus.subscribe_all(removals)
        await bus.start_consuming()
        events = [ItemAdded(name="a"), ItemRemoved(name="a"), CartCheckedOut()]
        await bus.publish(events)
        await eventually(lambda: len(everything) == 3, self.timeout, "the wildcard handler")
        assert sorted(e.event_id for e in everything) == sorted(e.event_id for e in events)
        assert removals.seen == [events[1]]

    async def test_every_group_gets_every_event(self, make_bus: MakeBus) -> None:
        recorders = {}
        for group in ("billing", "shipping"):
            bus = await make_bus(group)
            recorders[group] = Recorder()
            bus.subscribe(ItemAdded, recorders[group])
            await bus.start_consuming()
        publisher = await make_bus("publisher")
        events = cart_events(4, 5)
        await publisher.publish(events)
        for group, recorder in recorders.items():
            await eventually(partial(_has, recorder, 20), self.timeout, group)
        for recorder in recorders.values():
            assert sorted(recorder.ids) == sorted(e.event_id for e in events)

    async def test_consumers_of_one_group_share_its_events(self, make_bus: MakeBus) -> None:
        consumers, recorders = [], []
        for _ in range(2):
            bus = await make_bus("workers")
            recorder = Recorder()

            async def slow(event: DomainEvent, recorder: Recorder = recorder) -> None:
                await asyncio.sleep(0.005)
                await recorder.handle(event)

            bus.subscribe(ItemAdded, slow)
            await bus.start_consuming()
            consumers.append(bus)
            recorders.append(recorder)
        publisher = await make_bus("publisher")
        events = cart_events(16, 4)
        for event in events:
            await publisher.publish([event])
        await eventually(
            lambda: sum(len(r.events) for r in recorders) >= len(events),
            self.timeout,
            "all 64 events",
        )
        received = Counter(i for r in recorders for i in r.ids)
        assert set(received) == {e.event_id for e in events}
        assert max(received.values()) == 1, "a healthy group delivered an event twice"
        assert all(r.events for r in recorders), "one consumer got nothing"

    async def test_one_aggregates_events_arrive_in_order(self, make_bus: MakeBus) -> None:
        bus = await make_bus()
        recorder = Recorder()
        bus.subscribe(ItemAdded, recorder)
        await bus.start_consuming()
        events = cart_events(5, 20)
        for start in range(0, len(events), 7):
            await bus.publish(events[start : start + 7])
        await eventually(lambda: len(recorder.events) >= 100, self.timeout, "100 events")
        for versions in _versions_by_cart(recorder.events).values():
            assert versions == list(range(1, 21))

    async def test_events_published_while_a_group_is_stopped_wait_for_it(
        self, make_bus: MakeBus
    ) -> None:
        bus = await make_bus("reporting")
        recorder = Recorder()
        bus.subscribe(ItemAdded, recorder)
        await bus.start_consuming()
        await bus.stop_consuming()
        publisher = await make_bus("publisher")
        events = cart_events(1, 5)
        await publisher.publish(events)
        later = await make_bus("reporting")
        late = Recorder()
        later.subscribe(ItemAdded, late)
        await later.start_consuming()
        await eventually(lambda: len(late.events) >= 5, self.timeout, "the queued events")
        assert late.ids == [e.event_id for e in events]
        assert recorder.events == []

    async def test_background_publishes_finish_before_shutdown(self, make_bus: MakeBus) -> None:
        consumer = await make_bus()
        recorder = Recorder()
        consumer.subscribe(ItemAdded, recorder)
        await consumer.start_consuming()
        publisher = await make_bus("publisher")
        events = cart_events(3, 10)
        for start in range(0, len(events), 5):
            await publisher.publish(events[start : start + 5], background=True)
        await publisher.shutdown(timeout=20)
        assert publisher.stats.published == 30
        await eventually(lambda: len(recorder.events) >= 30, self.timeout, "30 events")
        assert sorted(recorder.ids) == sorted(e.event_id for e in events)

    # -- failures ------------------------------------------------------------------------

    # -- subscribing from other threads -------------------------------------------------

    async def test_a_handler_subscribed_from_another_thread_gets_events(
        self, make_bus: MakeBus
    ) -> None:
        bus = await make_bus("threads")
        first, late = Recorder(), Recorder()
        bus.subscribe(ItemAdded, first)
        await bus.start_consuming()
        await asyncio.to_thread(bus.subscribe, ItemRemoved, late)
        await asyncio.to_thread(bus.subscribe_to_all_events, first)
        cart = uuid4()
        events = [
            ItemAdded(name="pear").attached(cart, "Cart", 1),
            ItemRemoved(name="pear").attached(cart, "Cart", 2),
        ]
        # A broker that routes by type binds the new type in the background: publish until
        # the late handler is reached (a removal published before the binding is not routed).
        deadline = time.monotonic() + self.timeout
        await bus.publish(events)
        while not late.events and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if self.routes_by_type and not late.events:
                await bus.publish([ItemRemoved(name="pear").attached(cart, "Cart", 3)])
        await eventually(lambda: bool(late.events), self.timeout, "the late handler")
        assert isinstance(late.events[0], ItemRemoved)
        assert events[0] in first.events

    async def test_subscribing_from_many_threads_loses_no_handler(self, make_bus: MakeBus) -> None:
        """Threads subscribing and unsubscribing handlers of one type at once: every
        subscription holds until its own unsubscribe (none is lost to another's)."""
        bus = await make_bus("churn")
        lost: list[str] = []

        def churn(n: int) -> None:
            def handler(event: DomainEvent) -> None:
                return None

            for _ in range(2000):
                bus.subscribe(ItemAdded, handler)
                if not bus.unsubscribe(ItemAdded, handler):
                    lost.append(f"thread {n}")
                    return

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible
        try:
            await asyncio.gather(*(asyncio.to_thread(churn, n) for n in range(8)))
        finally:
            sys.setswitchinterval(interval)
        assert lost == [], f"subscriptions lost to another thread's unsubscribe: {lost}"
        assert ItemAdded.type_name() not in bus.subscribed_types

    async def test_a_failing_handler_is_retried_in_its_group_only(self, make_bus: MakeBus) -> None:
        flaky_bus = await make_bus("flaky", max_attempts=5)
        flaky = Recorder(fail_times=2)
        flaky_bus.subscribe(ItemAdded, flaky)
        await flaky_bus.start_consuming()
        steady_bus = await make_bus("steady", max_attempts=5)
        steady = Recorder()
        steady_bus.subscribe(ItemAdded, steady)
        await steady_bus.start_consuming()
        event = cart_events(1, 1)[0]
        await steady_bus.publish([event])
        await eventually(lambda: len(flaky.events) == 1, self.timeout, "the third attempt")
        await eventually(lambda: len(steady.events) == 1, self.timeout, "the steady group")
        assert flaky.attempts[event.event_id] == 3
        assert flaky.events == [event]
        assert flaky_bus.stats.retried == 2
        assert await flaky_bus.dead_letters() == []
        await asyncio.sleep(0.5)  # time for a wrongly routed retry to arrive
        assert steady.attempts[event.event_id] == 1, "a retry leaked into another group"

    async def test_a_handler_that_keeps_failing_dead_letters_the_event(
        self, make_bus: MakeBus
    ) -> None:
        bus = await make_bus("fragile", max_attempts=3)
        poison, healthy = cart_events(2, 1)
        recorder = Recorder(fail_times=10**6, fail_for={poison.event_id})
        bus.subscribe(ItemAdded, recorder)
        await bus.start_consuming()
        await bus.publish([poison, healthy])
        await eventually(lambda: bus.stats.dead_lettered == 1, self.timeout, "the dead letter")
        await eventually(lambda: recorder.events == [healthy], self.timeout, "the next event")
        assert recorder.attempts[poison.event_id] == 3
        letters = await bus.dead_letters()
        assert len(letters) == 1
        letter = letters[0]
        assert (letter.event_id, letter.event_type, letter.consumer_group) == (
            poison.event_id,
            "ItemAdded",
            "fragile",
        )
        assert letter.event == poison
        assert letter.attempts == 3
        assert "RuntimeError: planned failure 3" in letter.error

    async def test_a_retry_runs_only_the_handlers_that_failed(self, make_bus: MakeBus) -> None:
        bus = await make_bus("isolated", max_attempts=5)
        healthy, flaky = Recorder(), Recorder(fail_times=2)
        bus.subscribe(ItemAdded, healthy)
        bus.subscribe(ItemAdded, flaky)
        await bus.start_consuming()
        event = cart_events(1, 1)[0]
        await bus.publish([event])
        await eventually(lambda: flaky.events == [event], self.timeout, "the third attempt")
        assert flaky.attempts[event.event_id] == 3
        assert healthy.attempts[event.event_id] == 1, "a retry ran a handler that succeeded"
        assert healthy.events == [event]
        assert bus.stats.retried == 2
        assert bus.stats.handled == 1
        assert await bus.dead_letters() == []

    async def test_a_dead_letter_names_the_handler_that_kept_failing(
        self, make_bus: MakeBus
    ) -> None:
        bus = await make_bus("half-broken", max_attempts=3)
        healthy, broken = Recorder(), Recorder(fail_times=10**6)
        bus.subscribe(ItemAdded, healthy)
        bus.subscribe(ItemAdded, broken)
        await bus.start_consuming()
        event = cart_events(1, 1)[0]
        await bus.publish([event])
        await eventually(lambda: bus.stats.dead_lettered == 1, self.timeout, "the dead letter")
        assert broken.attempts[event.event_id] == 3
        assert healthy.attempts[event.event_id] == 1, "a retry ran a handler that succeeded"
        (letter,) = await bus.dead_letters()
        recorder = f"{Recorder.__module__}.{Recorder.__qualname__}"
        assert letter.failed_handlers == (f"{recorder}#2",)
        assert letter.handled_by == (recorder,)
        assert letter.attempts == 3
        assert "RuntimeError: planned failure 3" in letter.error

    async def test_an_unreadable_message_is_dead_lettered_at_once(self, make_bus: MakeBus) -> None:
        bus = await make_bus("auditors", max_attempts=5)
        seen: list[DomainEvent] = []
        bus.subscribe_to_all_events(seen.append)
        await bus.start_consuming()
        stranger = UnregisteredEvent(note="from a newer service")
        readable = ItemAdded(name="known")
        await bus.publish([stranger, readable])
        await eventually(lambda: seen == [readable], self.timeout, "the readable event")
        await eventually(lambda: bus.stats.dead_lettered == 1, self.timeout, "the dead letter")
        (letter,) = await bus.dead_letters()
        assert letter.event is None
        assert letter.event_id == stranger.event_id
        assert letter.attempts == 1
        assert "EventTypeNotFoundError" in letter.error
        assert b"from a newer service" in letter.body

    async def test_a_consumer_that_dies_mid_event_leaves_it_to_the_group(
        self, make_bus: MakeBus
    ) -> None:
        doomed = await make_bus("workers")
        started = asyncio.Event()

        async def hang(event: DomainEvent) -> None:
            started.set()
            await asyncio.Event().wait()

        doomed.subscribe(ItemAdded, hang)
        await doomed.start_consuming()
        publisher = await make_bus("publisher")
        event = cart_events(1, 1)[0]
        publishing = asyncio.create_task(publisher.publish([event]))
        await asyncio.wait_for(started.wait(), self.timeout)
        await doomed.abort()
        assert not doomed.consuming
        survivor = await make_bus("workers")
        recorder = Recorder()
        survivor.subscribe(ItemAdded, recorder)
        await survivor.start_consuming()
        await eventually(lambda: recorder.events == [event], self.timeout, "the redelivery")
        assert survivor.stats.recovered >= 1
        await asyncio.wait_for(publishing, self.timeout)

    # -- tenants -------------------------------------------------------------------------

    async def test_tenants_sharing_a_group_name_each_handle_all_their_own_events(
        self, make_bus: MakeBus
    ) -> None:
        """Consumers of two tenants configured with one group name (acme with two competing
        consumers), and one without a tenant: none acknowledges another's messages unread.
        Each tenant's consumers handle every event of their tenant exactly once, through
        retries and a dead letter, and never see the other tenant's; the consumer without a
        tenant handles all of them."""
        acme, globex = uuid4(), uuid4()
        events = {
            tenant: [
                ItemAdded(name=f"item-{n}", tenant_id=tenant).attached(uuid4(), "Cart", 1)
                for n in range(12)
            ]
            for tenant in (acme, globex)
        }
        interleaved = [e for pair in zip(events[acme], events[globex], strict=True) for e in pair]
        flaky = {e.event_id for e in events[acme][::4]}
        poison = events[globex][5]
        recorders = {
            acme: Recorder(fail_times=2, fail_for=flaky),
            globex: Recorder(fail_times=10**6, fail_for={poison.event_id}),
        }
        buses = {}
        for tenant in (acme, acme, globex):
            bus = await make_bus("shared", tenant_id=tenant, max_attempts=3)
            bus.subscribe(ItemAdded, recorders[tenant])
            await bus.start_consuming()
            buses[tenant] = bus
        everyone = Recorder()
        untenanted = await make_bus("shared", max_attempts=3)
        untenanted.subscribe(ItemAdded, everyone)
        await untenanted.start_consuming()
        publisher = await make_bus("publisher")
        for start in range(0, len(interleaved), 6):
            await publisher.publish(interleaved[start : start + 6])
        await eventually(partial(_has, recorders[acme], 12), self.timeout, "acme's 12 events")
        await eventually(partial(_has, recorders[globex], 11), self.timeout, "globex's 11")
        await eventually(partial(_has, everyone, 24), self.timeout, "all 24 events")
        await eventually(
            lambda: buses[globex].stats.dead_lettered == 1, self.timeout, "globex's dead letter"
        )
        ids = {tenant: [e.event_id for e in events[tenant]] for tenant in events}
        assert sorted(recorders[acme].ids) == sorted(ids[acme])
        assert sorted(recorders[globex].ids) == sorted(set(ids[globex]) - {poison.event_id})
        assert set(recorders[acme].attempts) == set(ids[acme]), "acme saw another's event"
        assert set(recorders[globex].attempts) == set(ids[globex]), "globex saw another's"
        assert {recorders[acme].attempts[i] for i in flaky} == {3}
        assert recorders[globex].attempts[poison.event_id] == 3
        assert sorted(everyone.ids) == sorted(e.event_id for e in interleaved)
        assert await buses[acme].dead_letters() == []
        assert await untenanted.dead_letters() == []
        (letter,) = await buses[globex].dead_letters()
        assert (letter.event, letter.attempts) == (poison, 3)
        assert letter.consumer_group == buses[globex].config.broker_group

    async def test_a_group_name_holding_the_tenant_mark_is_refused(self, make_bus: MakeBus) -> None:
        """`.tenant-` names per-tenant groups: a configured name holding it could join one."""
        with pytest.raises(ConfigurationError, match="set tenant_id"):
            await make_bus(f"shared.tenant-{uuid4()}")

    async def test_no_event_is_lost_when_connections_drop(self, make_bus: MakeBus) -> None:
        consumer = await make_bus()
        recorder = Recorder()
        consumer.subscribe(ItemAdded, recorder)
        await consumer.start_consuming()
        publisher = await make_bus("publisher")
        events = cart_events(4, 10)
        await publisher.publish(events[:20])
        await eventually(lambda: len(recorder.events) >= 5, self.timeout, "the first events")
        await self.drop_connections(consumer)
        await self.drop_connections(publisher)
        await publisher.publish(events[20:])
        await eventually(
            lambda: set(recorder.ids) >= {e.event_id for e in events}, self.timeout, "all 40"
        )
        assert consumer.consuming

    async def test_publish_and_process_spans_and_message_counts(self, make_bus: MakeBus) -> None:
        pytest.importorskip("opentelemetry.sdk")
        from eventsource import observability as o
        from eventsource.testing.telemetry import capture_telemetry

        with capture_telemetry() as captured:
            consumer = await make_bus("spans")
            recorder = Recorder(fail_times=1)
            consumer.subscribe(ItemAdded, recorder)
            await consumer.start_consuming()
            publisher = await make_bus("publisher")
            event = ItemAdded(name="traced").attached(uuid4(), "Cart", 4)
            await publisher.publish([event])
            await eventually(lambda: _has(recorder, 1), self.timeout, "the event")
            # the handled count is taken after the handler returns
            await eventually(lambda: consumer.stats.handled == 1, self.timeout, "the ack")
            bus_type = type(consumer).__name__
            (publish,) = captured.spans(f"{bus_type} publish")
            failed, handled = captured.spans("spans process")
            messages = {
                outcome: captured.value(
                    o.BUS_MESSAGES_METRIC,
                    {o.CONSUMER: consumer.config.consumer_name, o.OUTCOME: outcome},
                )
                for outcome in ("received", "handled", "retried")
            }
            published = captured.value(
                o.BUS_MESSAGES_METRIC,
                {o.CONSUMER: publisher.config.consumer_name, o.OUTCOME: "published"},
            )

        assert publish.context is not None
        for process in (failed, handled):
            assert process.parent is not None
            assert process.parent.span_id == publish.context.span_id, "one trace, publish first"
            assert process.context is not None
            assert process.context.trace_id == publish.context.trace_id
            assert (process.attributes or {})[o.STREAM_ID] == str(event.aggregate_id)
            assert (process.attributes or {})[o.VERSION] == 4
            assert (process.attributes or {})[o.EVENT_TYPE] == "ItemAdded"
        assert not failed.status.is_ok
        assert handled.status.is_ok
        assert messages == {"received": 2, "handled": 1, "retried": 1}
        assert published == 1

    async def test_trace_context_and_correlation_cross_the_broker(self, make_bus: MakeBus) -> None:
        trace = pytest.importorskip("opentelemetry.trace")
        bus = await make_bus()
        seen: list[tuple[int, DomainEvent]] = []

        def record(event: DomainEvent) -> None:
            seen.append((trace.get_current_span().get_span_context().trace_id, event))

        bus.subscribe(ItemAdded, record)
        await bus.start_consuming()
        trace_id = 0x5CE0E9A56015FEC5AADFA328AE398115
        parent = trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id=trace_id,
                span_id=0x1234567890ABCDEF,
                is_remote=False,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )
        )
        cause = ItemAdded(name="cause")
        event = ItemAdded(name="effect").with_causation(cause)
        with trace.use_span(parent):
            await bus.publish([event])
        await eventually(lambda: len(seen) == 1, self.timeout, "the event")
        ((received_trace, received),) = seen
        assert received_trace == trace_id
        assert (received.correlation_id, received.causation_id) == (
            cause.correlation_id,
            cause.event_id,
        )
