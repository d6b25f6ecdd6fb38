"""The event sourcing SDK's spellings (a client per store, repositories made from a client,
handlers named by event type), as thin entry points onto this library's stores, aggregates
and repository: one implementation, a second spelling.

    client = EventStoreClientFactory.create_grpc_client(host="127.0.0.1", port=50051,
                                                        tenant_id="my-tenant")
    await client.connect()
    repo = RepositoryFactory(client).create_repository(AccountAggregate, "Account")

- A *client* is an `EventStore`: `create_memory_client()` an in-memory one,
  `create_grpc_client()` a `GrpcEventStore` of a service run by `eventsource serve`. A tenant
  given by name is the UUID `tenant_uuid(name)` (a UUID text is that UUID).
- `AggregateRoot` (this module's) is constructible without an id (a new UUIDv7 is taken),
  keeps its state in plain attributes, names its type with `get_aggregate_type()`, raises
  events with `_raise_event` and applies them with methods marked
  `@event_sourcing_handler("EventType")`. Apply, versions and pending events are
  `eventsource.AggregateRoot`'s.
- `DomainEvent` (this module's) accepts `event_type = "Name"` without an annotation.
- `RepositoryFactory(client).create_repository(cls, type)` is an `AggregateRepository`.

(`eventsource.testing.plugin.RepositoryFactory` is another class: the pytest plugin's
fixture helper. The two live in different modules and never meet.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel
from pydantic._internal._model_construction import ModelMetaclass

from eventsource._internal.ids import TENANT_NAMESPACE, tenant_uuid, uuid7
from eventsource.aggregates.base import AggregateRoot as _CoreAggregateRoot
from eventsource.aggregates.base import UnhandledEventPolicy
from eventsource.aggregates.repository import AggregateRepository
from eventsource.events.base import DomainEvent as _CoreDomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.exceptions import UnhandledEventError
from eventsource.stores.in_memory import InMemoryEventStore
from eventsource.stores.interface import EventStore

if TYPE_CHECKING:
    from eventsource.stores.grpc import GrpcEventStore

__all__ = [
    "TENANT_NAMESPACE",
    "AggregateRoot",
    "DomainEvent",
    "EventStoreClientFactory",
    "InMemoryEventStoreClient",
    "RepositoryFactory",
    "event_sourcing_handler",
    "tenant_uuid",
]

TEvent = TypeVar("TEvent", bound=_CoreDomainEvent)
TAggregate = TypeVar("TAggregate", bound="AggregateRoot[Any]")
TFunc = TypeVar("TFunc", bound=Callable[..., Any])

_MARK = "__event_sourcing_handler__"


class _EventMeta(ModelMetaclass):
    """Lets an event class say `event_type = "Name"` without `: str` (pydantic would refuse
    an unannotated override of a field)."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> type:
        if "event_type" in namespace and "event_type" not in namespace.get("__annotations__", {}):
            namespace.setdefault("__annotations__", {})["event_type"] = str
        return super().__new__(mcs, name, bases, namespace, **kwargs)


class DomainEvent(_CoreDomainEvent, metaclass=_EventMeta, registry=None):
    """`eventsource.DomainEvent`, also accepting `event_type = "Name"` unannotated."""


def event_sourcing_handler(
    *event_types: str | type[_CoreDomainEvent],
) -> Callable[[TFunc], TFunc]:
    """Mark an aggregate method as the handler of events of these type names (or classes)."""
    if not event_types:
        raise TypeError("@event_sourcing_handler needs at least one event type")
    names = tuple(t if isinstance(t, str) else t.type_name() for t in event_types)

    def mark(function: TFunc) -> TFunc:
        setattr(function, _MARK, (*getattr(function, _MARK, ()), *names))
        return function

    return mark


class _NoState(BaseModel):
    """The core aggregate's state model: SDK aggregates keep their state in attributes."""


class AggregateRoot(_CoreAggregateRoot[_NoState], Generic[TEvent]):
    """An aggregate in the SDK's spelling (see the module docstring).

    `unhandled_events` says what an event without a handler does, as for
    `DeclarativeAggregate`: "error" (the default) raises `UnhandledEventError`.
    """

    unhandled_events: ClassVar[UnhandledEventPolicy] = "error"
    _by_name: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._state_type = _NoState
        handlers: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            own: dict[str, str] = {}
            for name, member in vars(klass).items():
                for event_type in getattr(member, _MARK, ()):
                    if event_type in own:
                        raise TypeError(
                            f"{klass.__qualname__}: both {own[event_type]}() and {name}() "
                            f"handle {event_type}"
                        )
                    own[event_type] = name
            handlers.update(own)
        cls._by_name = handlers

    def __init__(self, aggregate_id: UUID | None = None) -> None:
        super().__init__(aggregate_id if aggregate_id is not None else uuid7())
        declared = self.get_aggregate_type()
        if declared != type(self).aggregate_type:
            self.__dict__["aggregate_type"] = declared  # what new events are stamped with

    def _get_initial_state(self) -> _NoState:
        return _NoState()

    @property
    def id(self) -> UUID:
        return self.aggregate_id

    def get_aggregate_type(self) -> str:
        """The aggregate type its events are stored under (default: `aggregate_type`)."""
        return type(self).aggregate_type

    def _raise_event(self, event: TEvent) -> TEvent:
        """Apply a new event and queue it for saving (stamped with id, type, version)."""
        return self.apply_event(event)

    def _apply(self, event: _CoreDomainEvent) -> None:
        name = type(self)._by_name.get(event.event_type)
        if name is not None:
            getattr(self, name)(event)
        elif self.unhandled_events == "error":
            raise UnhandledEventError(
                f"{type(self).__qualname__} has no @event_sourcing_handler for "
                f"{event.event_type} (add one, or set unhandled_events = 'ignore')"
            )


class InMemoryEventStoreClient(InMemoryEventStore):
    """The SDK's in-memory client: an `InMemoryEventStore` with `connect()`."""

    async def connect(self) -> None:
        """Nothing to connect to (here for the same code to run on every client)."""


class EventStoreClientFactory:
    """Clients of the SDK: stores to build repositories on."""

    @staticmethod
    def create_memory_client(*, registry: EventRegistry | None = None) -> InMemoryEventStoreClient:
        return InMemoryEventStoreClient(registry=registry)

    @staticmethod
    def create_grpc_client(
        host: str,
        port: int,
        tenant_id: str | UUID | None = None,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        registry: EventRegistry | None = None,
        deadline: float = 30.0,
        reconnect_timeout: float = 30.0,
    ) -> GrpcEventStore:
        """A `GrpcEventStore` of the service at `host:port`, acting for `tenant_id` (a name
        or a UUID; see `tenant_uuid`) with `token` as its bearer token when given."""
        from eventsource.stores.grpc import GrpcEventStore

        return GrpcEventStore(
            f"{host}:{port}",
            registry=registry,
            token=token,
            tenant_id=None if tenant_id is None else tenant_uuid(tenant_id),
            tls=tls,
            root_certificates=root_certificates,
            deadline=deadline,
            reconnect_timeout=reconnect_timeout,
        )


class RepositoryFactory:
    """Repositories on one client: `create_repository(AccountAggregate, "Account")`."""

    def __init__(self, client: EventStore) -> None:
        self.client = client

    def create_repository(
        self, aggregate_class: type[TAggregate], aggregate_type: str | None = None
    ) -> AggregateRepository[TAggregate]:
        """An `AggregateRepository` of `aggregate_class` whose streams are `aggregate_type`
        (default: the class's `aggregate_type`)."""

        def create(aggregate_id: UUID) -> TAggregate:
            aggregate = aggregate_class()  # the SDK's aggregates take no arguments
            aggregate._aggregate_id = aggregate_id
            return aggregate

        return AggregateRepository(
            self.client,
            create,
            aggregate_type or aggregate_class.aggregate_type,
            # SDK aggregates keep their state in attributes, which a shared load would not
            # copy: every load reads for itself.
            single_flight=False,
        )
