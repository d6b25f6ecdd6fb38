"""Event store URLs for the command line: `sqlite:///path`, `sqlite:///:memory:`, `memory://`
and `postgresql://user@host/db?schema=name`.

SQLite URLs follow SQLAlchemy's form: three slashes then the path, so `sqlite:///demo.db` is
relative to the current directory and `sqlite:////tmp/demo.db` is absolute. PostgreSQL URLs
take an optional `schema` query parameter (default `public`); the tables are created if needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from eventsource.events import EventRegistry
from eventsource.exceptions import EventSourceError
from eventsource.stores import EventStore, InMemoryEventStore

__all__ = ["OpenedStore", "StoreURLError", "open_store"]

_SQLITE_SCHEMES = ("sqlite", "sqlite+aiosqlite")
_POSTGRESQL_SCHEMES = ("postgres", "postgresql", "postgresql+asyncpg")
_SUPPORTED = "sqlite:///PATH, sqlite:///:memory:, memory:// or postgresql://USER@HOST/DB"


class StoreURLError(EventSourceError, ValueError):
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
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise StoreURLError(f"{url!r} is not a store URL; use {_SUPPORTED}")
    if scheme == "memory":
        if rest:
            raise StoreURLError(f"{url!r}: an in-memory store takes no path; use memory://")
        return OpenedStore(
            InMemoryEventStore(registry=registry),
            "process memory (nothing is kept after exit)",
        )
    if scheme in _SQLITE_SCHEMES:
        return _open_sqlite(url, rest, registry)
    if scheme in _POSTGRESQL_SCHEMES:
        return _open_postgresql(url, registry)
    raise StoreURLError(f"{url!r}: unsupported scheme {scheme!r}; use {_SUPPORTED}")


def _open_sqlite(url: str, rest: str, registry: EventRegistry) -> OpenedStore:
    path = rest.removeprefix("/")
    if not rest.startswith("/") or not path:
        raise StoreURLError(
            f"{url!r}: a SQLite URL names a file after three slashes, e.g. sqlite:///demo.db "
            "(relative) or sqlite:////tmp/demo.db (absolute)"
        )
    if "?" in path or "#" in path:
        raise StoreURLError(f"{url!r}: SQLite URLs take no query options here")
    try:
        from eventsource.stores import SQLiteEventStore

        store = SQLiteEventStore(path, registry=registry)
    except ImportError as exc:
        raise StoreURLError(f"{url!r}: {exc} (or use memory://)") from exc
    if path == ":memory:":
        description = "a SQLite in-memory database (nothing is kept after exit)"
        return OpenedStore(store, description)
    return OpenedStore(
        store,
        f"SQLite file {Path(path).resolve()}",
        start_over="delete the file",
    )


def _open_postgresql(url: str, registry: EventRegistry) -> OpenedStore:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if len(schemas) > 1 or (schemas and not schemas[0]):
        raise StoreURLError(f"{url!r}: give the schema once, e.g. ?schema=demo")
    schema = schemas[0] if schemas else "public"
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    driver_url = urlunsplit(parts._replace(query=rest))
    try:
        from eventsource.stores import PostgreSQLEventStore

        store = PostgreSQLEventStore.from_url(driver_url, registry=registry, schema=schema)
    except (ImportError, ValueError) as exc:
        raise StoreURLError(f"{url!r}: {exc}") from exc
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
    return OpenedStore(
        store,
        f"PostgreSQL {where}, schema {schema!r}",
        start_over=f"drop the schema {schema!r}" if schema != "public" else "drop its tables",
        prepare=store.create_schema,
    )
