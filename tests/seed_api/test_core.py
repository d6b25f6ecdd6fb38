"""The package guide's core sections, run as written: types.py, exceptions.py, events/
(DomainEvent, EventRegistry) and aggregates/ (AggregateRoot, DeclarativeAggregate,
AggregateRepository), plus the "Core Types", "Events", "Aggregates" and "Exceptions" lists of
its Public API Surface."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel

import eventsource
from eventsource import (
    AggregateRepository,
    AggregateRoot,
    DeclarativeAggregate,
    DomainEvent,
    EventRegistry,
    EventStore,
    InMemoryEventBus,
    handles,
)
from eventsource.events import registry as registry_module
from tests._stores import open_event_store

# The events and aggregates of the guide. They live in a registry of their own, so that other
# test modules may define events of the same type names (see test_same_type_name_*).
registry = EventRegistry()


class OrderCreated(DomainEvent, registry=registry):
    event_type: str = "OrderCreated"
    aggregate_type: str = "Order"
    customer_id: UUID
    order_total: Decimal


class OrderShipped(DomainEvent, registry=registry):
    event_type: str = "OrderShipped"
    aggregate_type: str = "Order"
    tracking_number: str


class OrderState(BaseModel):
    order_id: UUID
    customer_id: UUID | None = None
    total: Decimal = Decimal(0)
    status: str = "new"
    tracking_number: str | None = None


class OrderAggregate(AggregateRoot[OrderState]):
    aggregate_type = "Order"

    def _get_initial_state(self) -> OrderState:
        return OrderState(order_id=self.aggregate_id)

    def _apply(self, event: DomainEvent) -> None:
        if isinstance(event, OrderCreated):
            self._state = OrderState(
                order_id=self.aggregate_id,
                customer_id=event.customer_id,
                total=event.order_total,
                status="created",
            )
        elif isinstance(event, OrderShipped):
            self._state = self._state.model_copy(
                update={"status": "shipped", "tracking_number": event.tracking_number}
            )

    def create(self, customer_id: UUID, total: Decimal) -> None:
        self.apply_event(OrderCreated(customer_id=customer_id, order_total=total))

    def ship(self, tracking_number: str) -> None:
        self.apply_event(OrderShipped(tracking_number=tracking_number))


class DeclarativeOrder(DeclarativeAggregate[OrderState]):
    aggregate_type = "Order"

    def _get_initial_state(self) -> OrderState:
        return OrderState(order_id=self.aggregate_id)

    @handles(OrderCreated)
    def _on_order_created(self, event: OrderCreated) -> None:
        self._state = OrderState(
            order_id=self.aggregate_id,
            customer_id=event.customer_id,
            total=event.order_total,
            status="created",
        )

    @handles(OrderShipped)
    def _on_order_shipped(self, event: OrderShipped) -> None:
        self._state = self._state.model_copy(
            update={"status": "shipped", "tracking_number": event.tracking_number}
        )

    def create(self, customer_id: UUID, total: Decimal) -> None:
        self.apply_event(OrderCreated(customer_id=customer_id, order_total=total))

    def ship(self, tracking_number: str) -> None:
        self.apply_event(OrderShipped(tracking_number=tracking_number))


@pytest.fixture
def fresh_default_registry(monkeypatch: pytest.MonkeyPatch) -> EventRegistry:
    """A new, empty `default_registry` for one test: the guide's module-level helpers and
    implicit registration use it, and no other test module sees what the test defines."""
    fresh = EventRegistry()
    monkeypatch.setattr(registry_module, "default_registry", fresh)
    return fresh


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(request, registry, tmp_path) as opened:
        yield opened


# -- Public API Surface -------------------------------------------------------------------------

CORE_TYPES = ["TState", "AggregateId", "EventId", "TenantId", "CorrelationId", "CausationId"]
EVENTS = [
    "DomainEvent",
    "EventRegistry",
    "default_registry",
    "register_event",
    "get_event_class",
    "get_event_class_or_none",
    "is_event_registered",
    "list_registered_events",
    "EventTypeNotFoundError",
    "DuplicateEventTypeError",
]
AGGREGATES = ["AggregateRoot", "DeclarativeAggregate", "handles", "AggregateRepository"]
EXCEPTIONS = [
    "EventSourceError",
    "OptimisticLockError",
    "AggregateNotFoundError",
    "EventNotFoundError",
    "ProjectionError",
]


@pytest.mark.parametrize("name", CORE_TYPES + EVENTS + AGGREGATES + EXCEPTIONS)
def test_public_api_name_imports_from_eventsource(name: str) -> None:
    assert name in eventsource.__all__
    namespace: dict[str, Any] = {}
    exec(f"from eventsource import {name}", namespace)
    assert namespace[name] is getattr(eventsource, name)


def test_types_module_has_every_alias_of_the_guide() -> None:
    from eventsource import types

    assert types.TState.__bound__ is not None
    for alias in ("AggregateId", "EventId", "TenantId", "CorrelationId", "CausationId"):
        assert getattr(types, alias) is UUID
    for alias in ("Version", "StreamPosition", "GlobalPosition"):
        assert getattr(types, alias) is int


def test_exceptions_of_the_guide_derive_from_eventsource_error() -> None:
    from eventsource import exceptions

    guide = [
        "OptimisticLockError",
        "EventNotFoundError",
        "AggregateNotFoundError",
        "ProjectionError",
        "EventStoreError",
        "EventBusError",
        "CheckpointError",
        "SerializationError",
        "RedisNotAvailableError",
    ]
    for name in guide:
        error = getattr(exceptions, name)
        assert issubclass(error, exceptions.EventSourceError), name
        assert getattr(eventsource, name) is error
    assert issubclass(exceptions.RedisNotAvailableError, exceptions.EventBusError)
    assert issubclass(exceptions.RedisNotAvailableError, ImportError)


def test_a_missing_redis_package_raises_redis_not_available_error() -> None:
    from eventsource._internal.optional import require

    with pytest.raises(eventsource.RedisNotAvailableError, match=r"eventsource-async\[redis\]"):
        require("eventsource_no_such_redis_module", extra="redis", feature="RedisEventBus")


# -- events/base.py -----------------------------------------------------------------------------


def test_domain_event_example_and_its_key_features() -> None:
    customer = uuid4()
    created = OrderCreated(customer_id=customer, order_total=Decimal("12.50"))
    assert (created.event_type, created.aggregate_type) == ("OrderCreated", "Order")
    assert isinstance(created.event_id, UUID)
    assert created.occurred_at.utcoffset() is not None
    assert created.correlation_id == created.event_id

    with pytest.raises(ValueError, match="frozen"):
        created.order_total = Decimal(0)  # type: ignore[misc]

    shipped = OrderShipped(tracking_number="TRACK123").with_causation(created)
    assert shipped.causation_id == created.event_id
    assert shipped.correlation_id == created.correlation_id

    enriched = shipped.with_metadata(user_id="u-1").with_metadata(source="api")
    assert enriched.metadata == {"user_id": "u-1", "source": "api"}
    assert shipped.metadata == {}

    data = created.to_dict()
    assert data["customer_id"] == str(customer)
    assert data["order_total"] == "12.50"
    assert OrderCreated.from_dict(data) == created


# -- events/registry.py -------------------------------------------------------------------------


def test_register_event_then_get_event_class_as_written(
    fresh_default_registry: EventRegistry,
) -> None:
    from eventsource import get_event_class, register_event

    @register_event
    class OrderCreated(DomainEvent):
        event_type: str = "OrderCreated"
        order_total: Decimal

    stored_data = OrderCreated(order_total=Decimal("3")).to_dict()

    # Later, deserialize from storage
    event_class = get_event_class("OrderCreated")
    event = event_class.from_dict(stored_data)

    assert event_class is OrderCreated
    assert event == OrderCreated.from_dict(stored_data)
    assert eventsource.is_event_registered("OrderCreated")
    assert eventsource.get_event_class_or_none("Nope") is None
    assert eventsource.list_registered_events() == ["OrderCreated"]
    with pytest.raises(eventsource.EventTypeNotFoundError, match="registered: OrderCreated"):
        get_event_class("OrderCreatd")


def _define_in_module(module: str, source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": module}
    exec(source, namespace)
    return namespace


_ORDER_PLACED = """
from eventsource import DomainEvent, register_event

class OrderPlaced(DomainEvent):
    event_type: str = "OrderPlaced"
"""


def test_same_type_name_in_two_modules_imports_and_only_lookup_is_ambiguous(
    fresh_default_registry: EventRegistry,
) -> None:
    first = _define_in_module("tests_a", _ORDER_PLACED)["OrderPlaced"]
    second = _define_in_module("tests_b", _ORDER_PLACED)["OrderPlaced"]
    assert first is not second

    with pytest.raises(eventsource.DuplicateEventTypeError, match=r"tests_a\.OrderPlaced") as err:
        eventsource.get_event_class("OrderPlaced")
    assert "tests_b.OrderPlaced" in str(err.value)
    assert not eventsource.is_event_registered(first)

    # Choosing one explicitly settles it.
    eventsource.register_event(second)
    assert eventsource.get_event_class("OrderPlaced") is second


def test_two_explicit_registrations_of_one_type_name_still_raise(
    fresh_default_registry: EventRegistry,
) -> None:
    _define_in_module("tests_a", _ORDER_PLACED.replace("class", "@register_event\nclass"))
    with pytest.raises(eventsource.DuplicateEventTypeError, match=r"tests_a\.OrderPlaced"):
        _define_in_module("tests_b", _ORDER_PLACED.replace("class", "@register_event\nclass"))


def test_an_explicit_class_keeps_its_name_against_a_later_implicit_one(
    fresh_default_registry: EventRegistry,
) -> None:
    chosen = _define_in_module("tests_a", _ORDER_PLACED.replace("class", "@register_event\nclass"))[
        "OrderPlaced"
    ]
    _define_in_module("tests_b", _ORDER_PLACED)
    assert eventsource.get_event_class("OrderPlaced") is chosen


def test_multiple_registries_keep_same_named_events_apart() -> None:
    first, second = EventRegistry(), EventRegistry()

    class Placed(DomainEvent, registry=first):
        event_type: str = "OrderPlaced"

    class PlacedAgain(DomainEvent, registry=second):
        event_type: str = "OrderPlaced"

    assert first.get("OrderPlaced") is Placed
    assert second.get("OrderPlaced") is PlacedAgain


# -- aggregates/ ----------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregate_class", [OrderAggregate, DeclarativeOrder])
async def test_loaded_aggregate_written_the_guide_way_has_its_state(
    store: EventStore, aggregate_class: type[OrderAggregate] | type[DeclarativeOrder]
) -> None:
    event_bus = InMemoryEventBus(registry=registry)
    published: list[DomainEvent] = []
    event_bus.subscribe(OrderShipped, published.append)

    repo = AggregateRepository(
        event_store=store,
        aggregate_factory=aggregate_class,
        aggregate_type="Order",
        event_publisher=event_bus,  # Optional
    )
    order_id, customer = uuid4(), uuid4()
    new = await repo.load_or_create(order_id)
    assert new.version == 0
    assert new.state == OrderState(order_id=order_id)
    new.create(customer, Decimal("99.90"))
    await repo.save(new)

    # Load existing
    order = await repo.load(order_id)
    assert order.state.status == "created"
    assert order.state.total == Decimal("99.90")

    # Save changes
    order.ship(tracking_number="TRACK123")
    await repo.save(order)

    loaded = await repo.load(order_id)
    assert loaded.state == OrderState(
        order_id=order_id,
        customer_id=customer,
        total=Decimal("99.90"),
        status="shipped",
        tracking_number="TRACK123",
    )
    assert loaded._state is loaded.state
    assert loaded.version == 2
    assert aggregate_class.aggregate_type == "Order"
    assert [e.event_type for e in published] == ["OrderShipped"]


def test_state_and_underscore_state_are_one_attribute() -> None:
    order = OrderAggregate(uuid4())
    replaced = OrderState(order_id=order.aggregate_id, status="x")
    order.state = replaced
    assert order._state is replaced
    order._state = OrderState(order_id=order.aggregate_id, status="y")
    assert order.state.status == "y"


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("eventsource.types", [*CORE_TYPES, "Version"]),
        ("eventsource.exceptions", [*EXCEPTIONS, "CheckpointError", "RedisNotAvailableError"]),
        ("eventsource.events.base", ["DomainEvent"]),
        ("eventsource.events.registry", EVENTS[1:8]),
        ("eventsource.aggregates.base", ["AggregateRoot", "DeclarativeAggregate"]),
        ("eventsource.aggregates.repository", ["AggregateRepository"]),
    ],
)
def test_module_paths_of_the_guide_tree_import(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        assert getattr(imported, name) is getattr(eventsource, name), f"{module}.{name}"
