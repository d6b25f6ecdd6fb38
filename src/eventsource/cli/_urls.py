"""Event store URLs for the command line, read by `eventsource.config`: `sqlite:///path`,
`sqlite:///:memory:`, `memory://` and `postgresql://user@host/db?schema=name` (see
`eventsource.config` for every form and option). PostgreSQL tables are created if needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from eventsource.config import ConfigurationError, create_event_store, parse_database_url
from eventsource.events import EventRegistry
from eventsource.stores import EventStore

__all__ = ["OpenedStore", "StoreURLError", "open_store"]

StoreURLError = ConfigurationError
"""A store URL that this command cannot open (unknown scheme, bad form, missing driver)."""


@dataclass(frozen=True, slots=True)
class OpenedStore:
    store: EventStore
    description: str
    """Where the events go, for people: the absolute file path, or that nothing persists."""
    start_over: str | None = None
    """How to start from scratch; None when nothing outlives the process."""
    prepare: Callable[[], Awaitable[object]] | None = None
    """What to run before first use (create the tables)."""


def open_store(url: str, *, registry: EventRegistry) -> OpenedStore:
    """The (not yet connected) store a URL names; `StoreURLError` when it names none."""
    database = parse_database_url(url)
    try:
        store = create_event_store(url, registry=registry)
    except ConfigurationError as exc:
        if isinstance(exc.__cause__, ImportError):
            raise StoreURLError(f"{exc} (or use memory://)") from exc
        raise
    if database.backend == "postgresql":
        schema = database.schema
        start_over = f"drop the schema {schema!r}" if schema != "public" else "drop its tables"
        prepare = getattr(store, "create_schema", None)
        return OpenedStore(store, database.description, start_over, prepare)
    if database.backend == "sqlite" and database.path != ":memory:":
        return OpenedStore(store, database.description, start_over="delete the file")
    return OpenedStore(store, database.description)
