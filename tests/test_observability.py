"""OpenTelemetry: one trace from a command through a real broker to a projection, the spans
and metrics of subscriptions, tenants and the outbox relay, and nothing recorded without an
SDK. The store and bus contracts check append and bus spans per backend."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from opentelemetry import trace
from pydantic import BaseModel

from eventsource import (
    AggregateRepository,
    DeclarativeAggregate,
    EventRegistry,
    EventStore,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
    InMemoryEventBus,
    InMemoryEventBusConfig,
    InMemoryEventStore,
    InMemorySnapshotStore,
    SnapshotPolicy,
    StoredEvent,
    SubscriptionConfig,
    SubscriptionManager,
    handles,
)
from eventsource import observability as o
from eventsource._internal import telemetry
from eventsource.bus import InMemoryBroker
from eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.exceptions import BusPublishError
from eventsource.multitenancy import TenantAggregateRepository, TenantDomainEvent, tenant_scope
from eventsource.outbox import InMemoryOutboxRepository, OutboxRelay
from eventsource.testing import TelemetryCapture, capture_telemetry
from eventsource.testing.bus import eventually
from tests._stores import open_event_store

registry = EventRegistry()


class Deposited(DomainEvent, registry=registry):
    amount: int


class TenantDeposited(TenantDomainEvent, registry=registry):
    amount: int


class Ledger(BaseModel):
    balance: int = 0


class Account(DeclarativeAggregate[Ledger]):
    aggregate_type = "Account"

    def deposit(self, amount: int) -> None:
        self.apply_event(Deposited(amount=amount))

    def deposit_for_tenant(self, amount: int) -> None:
        self.apply_event(TenantDeposited(amount=amount))

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.state.balance += event.amount

    @handles(TenantDeposited)
    def _tenant_deposited(self, event: TenantDeposited) -> None:
        self.state.balance += event.amount


@pytest.fixture
def captured() -> Any:
    with capture_telemetry() as capture:
        yield capture


def one(capture: TelemetryCapture, name: str) -> Any:
    spans = capture.spans(name)
    assert len(spans) == 1, f"{len(spans)} spans named {name!r}"
    return spans[0]


def attributes(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


# -- one trace across the store and a real broker ---------------------------------------------


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgresql)])
async def pg_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(request, registry, tmp_path) as store:
        yield store


@pytest.mark.redis
async def test_one_trace_from_command_through_a_broker_to_the_projection(
    captured: TelemetryCapture,
    pg_store: EventStore,
    redis_url: str,
    redis_prefix: str,
) -> None:
    def bus(group: str) -> RedisEventBus:
        config = RedisEventBusConfig(
            url=redis_url, stream_prefix=redis_prefix, consumer_group=group, block=0.05
        )
        return RedisEventBus(config, registry=registry)

    publisher, consumer = bus("writer"), bus("balances")
    balances: dict[UUID, int] = {}
    seen_in: list[Any] = []

    async def project(event: DomainEvent) -> None:  # the read model, fed by the broker
        assert isinstance(event, Deposited)
        seen_in.append(trace.get_current_span().get_span_context())
        balances[event.aggregate_id] = balances.get(event.aggregate_id, 0) + event.amount

    consumer.subscribe(Deposited, project)
    await consumer.start_consuming()
    repository = AggregateRepository(
        pg_store,
        Account,
        event_publisher=publisher,
        snapshot_store=InMemorySnapshotStore(),
        snapshot_policy=SnapshotPolicy.every(1),
    )
    account = uuid4()
    try:
        await repository.execute(account, lambda a: a.deposit(25), create=True)
        await eventually(lambda: balances.get(account) == 25, 20, "the projection")
    finally:
        await consumer.shutdown()
        await publisher.shutdown()

    execute = one(captured, "execute Account")
    load, save = one(captured, "load Account"), one(captured, "save Account")
    append, snapshot = one(captured, "append Account"), one(captured, "snapshot Account")
    publish, process = one(captured, "RedisEventBus publish"), one(captured, "balances process")
    assert execute.parent is None, "the command starts the trace"
    for child, parent in [
        (load, execute),
        (save, execute),
        (append, save),
        (snapshot, save),
        (publish, save),
        (process, publish),
    ]:
        assert child.context.trace_id == execute.context.trace_id
        assert child.parent.span_id == parent.context.span_id, f"{child.name} under {parent.name}"
    (handler_context,) = seen_in
    assert handler_context.span_id == process.context.span_id, "the projection ran in the trace"

    stream = str(account)
    assert attributes(load)[o.STREAM_ID] == stream
    assert attributes(load)[o.VERSION] == 0
    assert attributes(save)[o.VERSION] == 1
    assert attributes(append)[o.STORE] == "postgresql"
    assert attributes(append)[o.EVENT_TYPE] == "Deposited"
    assert attributes(append)[o.POSITION]
    assert attributes(snapshot)[o.VERSION] == 1
    for span in (publish, process):
        assert attributes(span)[o.STREAM_ID] == stream
        assert attributes(span)[o.EVENT_TYPE] == "Deposited"
        assert attributes(span)[o.VERSION] == 1


# -- subscriptions -------------------------------------------------------------------------------


async def test_subscription_spans_lag_state_and_dead_letters(captured: TelemetryCapture) -> None:
    store = InMemoryEventStore(registry=registry)
    poison = uuid4()
    handled: list[int] = []

    async def ledger(stored: StoredEvent) -> None:
        if stored.aggregate_id == poison:
            raise ValueError("cannot book this")
        assert isinstance(stored.event, Deposited)
        handled.append(stored.event.amount)

    accounts = [uuid4() for _ in range(4)]
    for n, account in enumerate([*accounts, poison]):
        await store.append_events(account, "Account", [Deposited(amount=n)], 0)
    config = SubscriptionConfig(max_attempts=2, retry_base=0.001, circuit_breaker=None)
    manager = SubscriptionManager(
        store,
        InMemoryCheckpointRepository(),
        InMemoryDLQRepository(),
        config=config,
        metrics_interval=0.02,
    )
    subscription = manager.subscribe(ledger, name="ledger")
    async with manager:
        await subscription.wait_for(await store.current_position(), timeout=10)
        await eventually(lambda: manager.dead_letter_sizes == {"ledger": 1}, 20, "the DLQ count")
        ours = {o.SUBSCRIPTION: "ledger"}
        assert captured.value(o.DLQ_SIZE_METRIC, ours) == 1
        assert captured.value(o.SUBSCRIPTION_LAG_METRIC, ours) == 0
        live = {**ours, "eventsource.subscription.state": "live"}
        assert captured.value(o.SUBSCRIPTION_STATE_METRIC, live) == 1
        assert captured.value(o.SUBSCRIPTION_STATE_METRIC, ours) == 1, "one state at a time"
        processed = captured.value(o.SUBSCRIPTION_EVENTS_METRIC, {**ours, o.OUTCOME: "processed"})
        dead = captured.value(o.SUBSCRIPTION_EVENTS_METRIC, {**ours, o.OUTCOME: "dead_lettered"})
        assert (processed, dead) == (5, 1)

        # Paused after the last event: behind by that event's age, not 0.
        subscription.pause()
        await eventually(lambda: subscription.state.value == "paused", 20, "the pause")
        lag = captured.value(o.SUBSCRIPTION_LAG_METRIC, ours)
        assert lag is not None
        assert lag > 0
        subscription.resume()
    assert captured.value(o.SUBSCRIPTION_STATE_METRIC, ours) is None, "stopped: not reported"

    projected = captured.spans("project ledger")
    assert len(projected) == 4 + 2, "one span per delivery attempt"
    failed = [s for s in projected if not s.status.is_ok]
    assert [attributes(s)[o.STREAM_ID] for s in failed] == [str(poison)] * 2
    first = attributes(projected[0])
    assert first[o.SUBSCRIPTION] == "ledger"
    assert first[o.STREAM_ID] == str(accounts[0])
    assert first[o.EVENT_TYPE] == "Deposited"
    assert first[o.VERSION] == 1
    assert first[o.POSITION]
    assert sorted(handled) == [0, 1, 2, 3]


async def test_a_partition_traces_only_its_own_events(captured: TelemetryCapture) -> None:
    store = InMemoryEventStore(registry=registry)
    handled: list[UUID] = []

    async def ledger(stored: StoredEvent) -> None:
        handled.append(stored.event_id)

    for n in range(12):
        await store.append_events(uuid4(), "Account", [Deposited(amount=n)], 0)
    manager = SubscriptionManager(store, InMemoryCheckpointRepository())
    parts = manager.subscribe_partitioned(ledger, 3, name="ledger")
    async with manager:
        end = await store.current_position()
        for part in parts:
            await part.wait_for(end, timeout=10)
    spans = [span for part in parts for span in captured.spans(f"project {part.name}")]
    assert len(spans) == len(handled) == 12, "one span per event, in its partition only"
    assert {attributes(span)[o.STREAM_ID] for span in spans} == {
        str(stored.aggregate_id) async for stored in store.read_all()
    }


# -- tenants -------------------------------------------------------------------------------------


async def test_the_tenant_is_recorded_on_load_save_and_append(captured: TelemetryCapture) -> None:
    store = InMemoryEventStore(registry=registry)
    repository = TenantAggregateRepository(store, Account)
    tenant, account = uuid4(), uuid4()
    async with tenant_scope(tenant):
        await repository.execute(account, lambda a: a.deposit_for_tenant(5), create=True)
        await repository.load(account)
    loads = captured.spans("load Account")
    assert len(loads) == 2
    for span in [*loads, one(captured, "save Account"), one(captured, "append Account")]:
        assert attributes(span)[o.TENANT_ID] == str(tenant), span.name


# -- the outbox relay ----------------------------------------------------------------------------


class RefusingBus:
    async def publish(self, events: list[DomainEvent]) -> None:
        raise BusPublishError("the broker refused the batch")


async def test_outbox_relay_batches_are_traced_and_counted(captured: TelemetryCapture) -> None:
    outbox = InMemoryOutboxRepository()
    store = InMemoryEventStore(registry=registry, outbox=outbox)
    bus = InMemoryEventBus(
        InMemoryEventBusConfig(consumer_group="sink"), broker=InMemoryBroker(), registry=registry
    )
    for n in range(3):
        await store.append_events(uuid4(), "Account", [Deposited(amount=n)], 0)

    failing = OutboxRelay(outbox, RefusingBus(), registry=registry, retry_delay=0.0)
    assert await failing.publish_pending() == 0
    relay = OutboxRelay(outbox, bus, registry=registry)
    assert await relay.publish_pending() == 3

    refused, relayed = captured.spans("outbox relay")
    assert not refused.status.is_ok
    assert relayed.status.is_ok
    assert attributes(relayed)[o.EVENT_COUNT] == 3
    publish = one(captured, "InMemoryEventBus publish")
    assert publish.parent.span_id == relayed.context.span_id
    assert captured.value(o.OUTBOX_EVENTS_METRIC, {o.OUTCOME: "published"}) == 3
    assert captured.value(o.OUTBOX_EVENTS_METRIC, {o.OUTCOME: "failed"}) == 3
    await bus.close()


# -- without an SDK ------------------------------------------------------------------------------


async def test_disabled_telemetry_records_and_propagates_nothing(
    captured: TelemetryCapture,
) -> None:
    o.configure_telemetry(
        tracer_provider=captured.tracer_provider,
        meter_provider=captured.meter_provider,
        enabled=False,
    )
    assert telemetry.tracer() is None
    assert telemetry.instruments() is None
    store = InMemoryEventStore(registry=registry)
    repository = AggregateRepository(store, Account)
    await repository.execute(uuid4(), lambda a: a.deposit(1), create=True)
    headers: dict[str, str] = {}
    with trace.use_span(captured.tracer_provider.get_tracer("test").start_span("outer")):
        telemetry.inject(headers)
    assert headers == {}
    assert captured.spans() == []
    assert captured.value(o.APPEND_DURATION_METRIC) is None


def test_global_providers_set_after_import_are_used() -> None:
    """What applications do: eventsource objects exist before the SDK is installed globally
    (a bus created at import time); its metrics and spans reach the SDK all the same, and
    before that nothing is recorded."""
    script = textwrap.dedent(
        """
        import asyncio
        from uuid import uuid4

        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        from eventsource import DomainEvent, EventRegistry, InMemoryEventBus, InMemoryEventStore
        from eventsource._internal import telemetry

        registry = EventRegistry()

        class Pinged(DomainEvent, registry=registry):
            pass

        bus = InMemoryEventBus(registry=registry)  # watched before any SDK exists
        store = InMemoryEventStore(registry=registry)
        assert telemetry.tracer() is None and telemetry.instruments() is None

        async def main() -> None:
            await store.append_events(uuid4(), "Ping", [Pinged()], 0)  # not recorded
            exporter = InMemorySpanExporter()
            tracer_provider = TracerProvider()
            tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(tracer_provider)
            reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            await store.append_events(uuid4(), "Ping", [Pinged()], 0)
            await bus.publish([Pinged()])
            names = sorted(span.name for span in exporter.get_finished_spans())
            assert names == ["InMemoryEventBus publish", "append Ping"], names
            found = {}
            for resource in reader.get_metrics_data().resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        for point in metric.data.data_points:
                            key = (metric.name, point.attributes.get("eventsource.outcome"))
                            found[key] = getattr(point, "value", getattr(point, "count", None))
            assert found[("eventsource.events.appended", None)] == 1, found
            assert found[("eventsource.append.duration", None)] == 1, found
            assert found[("eventsource.bus.messages", "published")] == 1, found
            print("ok")

        asyncio.run(main())
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
