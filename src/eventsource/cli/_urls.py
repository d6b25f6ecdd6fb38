"""Event store URLs for the command line: `sqlite:///path`, `sqlite:///:memory:`, `memory://`.

SQLite URLs follow SQLAlchemy's form: three slashes then the path, so `sqlite:///demo.db` is
relative to the current directory and `sqlite:////tmp/demo.db` is absolute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eventsource.events import EventRegistry
from eventsource.exceptions import EventSourceError
from eventsource.stores import EventStore, InMemoryEventStore

__all__ = ["OpenedStore", "StoreURLError", "open_store"]

_SQLITE_SCHEMES = ("sqlite", "sqlite+aiosqlite")
_POSTGRESQL_SCHEMES = ("postgres", "postgresql", "postgresql+asyncpg")
_SUPPORTED = "sqlite:///PATH, sqlite:///:memory: or memory://"


class StoreURLError(EventSourceError, ValueError):
    """A store URL that this command cannot open (unknown scheme, bad form, missing driver)."""


@dataclass(frozen=True, slots=True)
class OpenedStore:
    store: EventStore
    description: str
    """Where the events go, for people: the absolute file path, or that nothing persists."""
    persistent: bool
    """True when the events outlive the process (a file)."""


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
            persistent=False,
        )
    if scheme in _SQLITE_SCHEMES:
        return _open_sqlite(url, rest, registry)
    if scheme in _POSTGRESQL_SCHEMES:
        raise StoreURLError(
            f"{url!r}: there is no PostgreSQL event store yet (it arrives in a later "
            f"release); use {_SUPPORTED}"
        )
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
        return OpenedStore(store, description, persistent=False)
    return OpenedStore(store, f"SQLite file {Path(path).resolve()}", persistent=True)
