"""`EventRegistry`: maps event type names to classes, and holds the upcasters of each type."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from eventsource.exceptions import (
    DuplicateEventTypeError,
    EventTypeNotFoundError,
    UpcasterRegistrationError,
    UpcastingError,
)

if TYPE_CHECKING:
    from eventsource.events.base import DomainEvent

__all__ = [
    "EventRegistry",
    "Upcaster",
    "default_registry",
    "get_event_class",
    "get_event_class_or_none",
    "is_event_registered",
    "list_registered_events",
    "register_event",
    "upcaster",
]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the stored data of version n of an event type into the data of version n + 1."""

TEvent = TypeVar("TEvent", bound="type[DomainEvent]")
TUpcaster = TypeVar("TUpcaster", bound=Upcaster)


def _type_name(event_type: str | type[DomainEvent]) -> str:
    return event_type if isinstance(event_type, str) else event_type.type_name()


def _same_definition(a: type, b: type) -> bool:
    """The same class, or the same class redefined (a module reload)."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


class EventRegistry:
    """Thread-safe map of event type name -> `DomainEvent` subclass, plus upcasters."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._classes: dict[str, type[DomainEvent]] = {}
        self._explicit: set[str] = set()
        self._ambiguous: dict[str, list[type[DomainEvent]]] = {}
        self.generation = 0
        """Bumped whenever a type is registered or unregistered (lets readers cache lookups)."""
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_class: TEvent) -> TEvent:
        """Register a class under its type name; usable as a class decorator.

        Registering the same class again is a no-op, and a class redefined under the same
        module and qualified name (a module reload) replaces the old one. Another class
        explicitly registered under the name (by this method, `@register_event` or
        `registry=` in its class statement) raises `DuplicateEventTypeError`; a class that
        merely joined the default registry by being defined gives way.
        """
        name = event_class.type_name()
        with self._lock:
            existing = self._classes.get(name)
            if (
                name in self._explicit
                and existing is not None
                and not _same_definition(existing, event_class)
            ):
                raise DuplicateEventTypeError(name, existing, event_class)
            self._classes[name] = event_class
            self._explicit.add(name)
            self._ambiguous.pop(name, None)
            self.generation += 1
        return event_class

    def adopt(self, event_class: type[DomainEvent]) -> None:
        """Register a class that joined this registry implicitly (`DomainEvent` subclasses
        defined without `registry=` join `default_registry` this way).

        Unlike `register`, a name clash does not raise here, so two modules (typically two
        test modules) may each define an event of the same type name: a class registered
        explicitly keeps the name, and between implicit classes the name becomes ambiguous:
        looking it up raises `DuplicateEventTypeError` naming both.
        """
        name = event_class.type_name()
        with self._lock:
            self.generation += 1
            existing = self._classes.get(name)
            claimants = self._ambiguous.get(name)
            if claimants is not None:
                kept = [c for c in claimants if not _same_definition(c, event_class)]
                self._ambiguous[name] = [*kept, event_class]
                if len(kept) == 0:
                    del self._ambiguous[name]
                    self._classes[name] = event_class
            elif existing is None or _same_definition(existing, event_class):
                self._classes[name] = event_class
            elif name not in self._explicit:
                del self._classes[name]
                self._ambiguous[name] = [existing, event_class]

    def unregister(self, event_type: str | type[DomainEvent]) -> None:
        """Forget a type and its upcasters (missing types are ignored)."""
        name = _type_name(event_type)
        with self._lock:
            self._classes.pop(name, None)
            self._explicit.discard(name)
            self._ambiguous.pop(name, None)
            self.generation += 1
            for key in [k for k in self._upcasters if k[0] == name]:
                del self._upcasters[key]

    def get(self, event_type: str) -> type[DomainEvent]:
        """The class of `event_type`, or `EventTypeNotFoundError` listing what is registered
        (`DuplicateEventTypeError` when two implicitly registered classes claim the name)."""
        try:
            return self._classes[event_type]
        except KeyError:
            claimants = self._ambiguous.get(event_type)
            if claimants:
                raise DuplicateEventTypeError(
                    event_type, claimants[0], claimants[-1], lookup=True
                ) from None
            raise EventTypeNotFoundError(event_type, self.list_types()) from None

    def get_or_none(self, event_type: str) -> type[DomainEvent] | None:
        return self._classes.get(event_type)

    def is_registered(self, event_type: str | type[DomainEvent]) -> bool:
        if isinstance(event_type, str):
            return event_type in self._classes
        return self._classes.get(event_type.type_name()) is event_type

    def list_types(self) -> list[str]:
        """Registered type names, sorted (ambiguous names are left out)."""
        with self._lock:
            return sorted(self._classes)

    def __contains__(self, event_type: object) -> bool:
        return isinstance(event_type, str | type) and self.is_registered(event_type)

    def __len__(self) -> int:
        return len(self._classes)

    # -- upcasting ---------------------------------------------------------------------------

    def register_upcaster(
        self, event_type: str | type[DomainEvent], from_version: int, function: Upcaster
    ) -> None:
        """Register `function` to turn version `from_version` data into version + 1 data."""
        name = _type_name(event_type)
        if from_version < 1:
            raise UpcasterRegistrationError(
                f"upcaster for {name!r}: from_version must be >= 1, got {from_version}"
            )
        with self._lock:
            if (name, from_version) in self._upcasters:
                raise UpcasterRegistrationError(
                    f"an upcaster for {name!r} from version {from_version} is already registered"
                )
            self._upcasters[(name, from_version)] = function

    def upcaster(
        self, event_type: str | type[DomainEvent], *, from_version: int
    ) -> Callable[[TUpcaster], TUpcaster]:
        """Decorator form of `register_upcaster`."""

        def decorate(function: TUpcaster) -> TUpcaster:
            self.register_upcaster(event_type, from_version, function)
            return function

        return decorate

    def upcast(
        self, event_type: str, data: dict[str, Any], from_version: int, to_version: int
    ) -> dict[str, Any]:
        """Run the upcaster chain from `from_version` to `to_version` over stored data."""
        if from_version > to_version:
            raise UpcastingError(
                f"stored {event_type!r} event has schema version {from_version}, newer than the "
                f"version {to_version} this code knows: deploy the newer event class to read it"
            )
        for version in range(from_version, to_version):
            step = self._upcasters.get((event_type, version))
            if step is None:
                raise UpcastingError(
                    f"no upcaster registered for {event_type!r} from version {version} to "
                    f"{version + 1}; stored events of version {from_version} cannot be read as "
                    f"version {to_version}"
                )
            try:
                data = step(data)
            except Exception as exc:
                raise UpcastingError(
                    f"upcaster for {event_type!r} from version {version} failed: {exc!r}"
                ) from exc
            data["event_version"] = version + 1
        return data


default_registry = EventRegistry()
"""The registry `DomainEvent` subclasses join unless their class statement names another."""


def register_event(event_class: TEvent) -> TEvent:
    """Class decorator registering an event class in `default_registry` (idempotent)."""
    return default_registry.register(event_class)


def upcaster(
    event_type: str | type[DomainEvent], *, from_version: int
) -> Callable[[TUpcaster], TUpcaster]:
    """Decorator registering an upcaster in `default_registry`."""
    return default_registry.upcaster(event_type, from_version=from_version)


def get_event_class(event_type: str) -> type[DomainEvent]:
    return default_registry.get(event_type)


def get_event_class_or_none(event_type: str) -> type[DomainEvent] | None:
    return default_registry.get_or_none(event_type)


def is_event_registered(event_type: str | type[DomainEvent]) -> bool:
    return default_registry.is_registered(event_type)


def list_registered_events() -> list[str]:
    return default_registry.list_types()
