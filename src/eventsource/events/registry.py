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


class EventRegistry:
    """Thread-safe map of event type name -> `DomainEvent` subclass, plus upcasters."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._classes: dict[str, type[DomainEvent]] = {}
        self.generation = 0
        """Bumped whenever a type is registered or unregistered (lets readers cache lookups)."""
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_class: TEvent) -> TEvent:
        """Register a class under its type name; usable as a class decorator.

        Registering the same class again is a no-op, and a class redefined under the same
        module and qualified name (a module reload) replaces the old one. Another class
        claiming a taken name raises `DuplicateEventTypeError`.
        """
        name = event_class.type_name()
        with self._lock:
            existing = self._classes.get(name)
            if existing is not None and existing is not event_class:
                same_definition = (existing.__module__, existing.__qualname__) == (
                    event_class.__module__,
                    event_class.__qualname__,
                )
                if not same_definition:
                    raise DuplicateEventTypeError(name, existing, event_class)
            self._classes[name] = event_class
            self.generation += 1
        return event_class

    def unregister(self, event_type: str | type[DomainEvent]) -> None:
        """Forget a type and its upcasters (missing types are ignored)."""
        name = _type_name(event_type)
        with self._lock:
            self._classes.pop(name, None)
            self.generation += 1
            for key in [k for k in self._upcasters if k[0] == name]:
                del self._upcasters[key]

    def get(self, event_type: str) -> type[DomainEvent]:
        """The class of `event_type`, or `EventTypeNotFoundError` listing what is registered."""
        try:
            return self._classes[event_type]
        except KeyError:
            raise EventTypeNotFoundError(event_type, self.list_types()) from None

    def get_or_none(self, event_type: str) -> type[DomainEvent] | None:
        return self._classes.get(event_type)

    def is_registered(self, event_type: str | type[DomainEvent]) -> bool:
        if isinstance(event_type, str):
            return event_type in self._classes
        return self._classes.get(event_type.type_name()) is event_type

    def list_types(self) -> list[str]:
        """Registered type names, sorted."""
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
