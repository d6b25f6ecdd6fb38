"""Events: `DomainEvent`, the `EventRegistry`, upcasting and the stored JSON form."""

from eventsource.events.base import NIL_AGGREGATE_ID, DomainEvent
from eventsource.events.registry import (
    EventRegistry,
    Upcaster,
    default_registry,
    get_event_class,
    get_event_class_or_none,
    is_event_registered,
    list_registered_events,
    register_event,
    upcaster,
)
from eventsource.events.serialization import EventCodec

__all__ = [
    "NIL_AGGREGATE_ID",
    "DomainEvent",
    "EventCodec",
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
