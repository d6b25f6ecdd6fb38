"""Event stores: the `EventStore` interface and its backends.

Backends with a third-party driver are imported on first attribute access, so importing this
package never imports a driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource.stores.in_memory import InMemoryEventStore
from eventsource.stores.interface import (
    AppendResult,
    EventPublisher,
    EventStore,
    EventStream,
    ExpectedVersion,
    Position,
    ReadDirection,
    ReadOptions,
    StoredEvent,
    StreamInfo,
    StreamListing,
)

if TYPE_CHECKING:
    from eventsource.stores.grpc import GrpcEventStore
    from eventsource.stores.nats import NATSEventStore
    from eventsource.stores.postgresql import PostgreSQLEventStore
    from eventsource.stores.sqlite import SQLiteEventStore

__all__ = [
    "AppendResult",
    "EventPublisher",
    "EventStore",
    "EventStream",
    "ExpectedVersion",
    "GrpcEventStore",
    "InMemoryEventStore",
    "NATSEventStore",
    "Position",
    "PostgreSQLEventStore",
    "ReadDirection",
    "ReadOptions",
    "SQLiteEventStore",
    "StoredEvent",
    "StreamInfo",
    "StreamListing",
]


def __getattr__(name: str) -> Any:
    if name == "SQLiteEventStore":
        from eventsource.stores.sqlite import SQLiteEventStore

        return SQLiteEventStore
    if name == "NATSEventStore":
        from eventsource.stores.nats import NATSEventStore

        return NATSEventStore
    if name == "PostgreSQLEventStore":
        from eventsource.stores.postgresql import PostgreSQLEventStore

        return PostgreSQLEventStore
    if name == "GrpcEventStore":
        from eventsource.stores.grpc import GrpcEventStore

        return GrpcEventStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
