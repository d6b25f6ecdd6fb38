"""`@handles`: declare which event types a method handles; shared by aggregates and projections."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from eventsource.events.base import DomainEvent

__all__ = ["collect_handlers", "handles"]

TFunc = TypeVar("TFunc", bound=Callable[..., Any])

_MARK = "__eventsource_handles__"


def handles(*event_types: type[DomainEvent]) -> Callable[[TFunc], TFunc]:
    """Mark a method as the handler of one or more event classes."""
    if not event_types:
        raise TypeError("@handles needs at least one event class")

    def mark(function: TFunc) -> TFunc:
        setattr(function, _MARK, (*getattr(function, _MARK, ()), *event_types))
        return function

    return mark


def collect_handlers(cls: type) -> dict[type[DomainEvent], str]:
    """Event class -> method name, over the class and its bases (subclasses override).

    Two methods of one class claiming the same event class is a `TypeError` at class creation.
    """
    handlers: dict[type[DomainEvent], str] = {}
    for klass in reversed(cls.__mro__):
        own: dict[type[DomainEvent], str] = {}
        for name, member in vars(klass).items():
            for event_type in getattr(member, _MARK, ()):
                if event_type in own:
                    raise TypeError(
                        f"{klass.__qualname__}: both {own[event_type]}() and {name}() "
                        f"handle {event_type.__qualname__}"
                    )
                own[event_type] = name
        handlers.update(own)
    return handlers
