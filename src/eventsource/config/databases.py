"""Database URLs: the event store, snapshots, checkpoints, dead letters, outbox and inbox."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from eventsource._internal.sqlite import synchronous_mode
from eventsource.config._options import building, mask_url, read_options
from eventsource.exceptions import ConfigurationError

if TYPE_CHECKING:
    from eventsource.events.registry import EventRegistry
    from eventsource.outbox.interface import InboxRepository, OutboxRepository
    from eventsource.repositories.interface import CheckpointRepository, DLQRepository
    from eventsource.snapshots.interface import SnapshotStore
    from eventsource.stores.interface import EventStore

Backend = Literal["memory", "sqlite", "postgresql", "nats"]

_DATABASE_SCHEMES: dict[str, Backend] = {
    "memory": "memory",
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "postgresql+asyncpg": "postgresql",
    "nats": "nats",
}
_DATABASE_FORMS = (
    "memory://, sqlite:///PATH, sqlite:///:memory:, postgresql://USER@HOST/DB or nats://HOST:PORT"
)
_DATABASE_OPTIONS: dict[Backend, dict[str, Any]] = {
    "memory": {"outbox": bool},
    "sqlite": {"prefix": str, "outbox": bool, "busy_timeout": float, "synchronous": str},
    "postgresql": {
        "schema": str,
        "prefix": str,
        "outbox": bool,
        "notify": bool,
        "max_connections": int,
        "transient_retries": int,
        "retry_timeout": float,
    },
    "nats": {"prefix": str, "replicas": int, "duplicate_window": float},
}
_NATS_PARTS = ("snapshots", "checkpoints")
"""What a nats:// URL provides beside the event store (no dead letters, outbox or inbox)."""


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A parsed database URL: the backend, where its data lives, and its options.

    `url` is the URL as given with its password masked, safe to log; `driver_url` (PostgreSQL:
    the URL without this library's options) keeps the password and stays out of the repr.
    Table names start with `prefix` on every backend (`{prefix}events`, `{prefix}snapshots`,
    ...). `synchronous` None leaves each SQLite component its own default.
    """

    backend: Backend
    url: str
    path: str = ""
    driver_url: str = field(default="", repr=False)
    schema: str = "public"
    prefix: str = ""
    outbox: bool = False
    notify: bool = True
    max_connections: int = 10
    transient_retries: int | None = None
    retry_timeout: float = 5.0
    busy_timeout: float = 10.0
    synchronous: str | None = None
    replicas: int = 1
    duplicate_window: float = 120.0

    def __post_init__(self) -> None:
        if not self.schema:
            raise ValueError("schema must not be empty")
        retries = self.transient_retries
        if (
            self.max_connections < 1
            or (retries is not None and retries < 0)
            or not self.retry_timeout >= 0
            or self.busy_timeout < 0
        ):
            raise ValueError(
                "need max_connections >= 1, transient_retries >= 0, retry_timeout >= 0 "
                "and busy_timeout >= 0"
            )
        if self.synchronous is not None:
            object.__setattr__(self, "synchronous", synchronous_mode(self.synchronous))

    @property
    def description(self) -> str:
        """Where the data goes, for people (and log lines): no password."""
        if self.backend == "memory":
            return "process memory (nothing is kept after exit)"
        if self.backend == "sqlite":
            if self.path == ":memory:":
                return "a SQLite in-memory database (nothing is kept after exit)"
            return f"SQLite file {Path(self.path).resolve()}"
        if self.backend == "nats":
            parts = urlsplit(self.driver_url)
            where = f"{parts.hostname or 'localhost'}:{parts.port or 4222}"
            return f"NATS JetStream {where}, stream {self.prefix}events"
        from eventsource._internal.postgresql import connect_target

        return f"PostgreSQL {connect_target(self.driver_url).where}, schema {self.schema!r}"


def parse_database_url(url: str, **options: object) -> DatabaseURL:
    """The backend and options a database URL names; keyword `options` (same names as the
    query options) win over the URL's. `ConfigurationError` when it names none."""
    shown = repr(mask_url(url))
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigurationError(f"{shown} is not a store URL; use {_DATABASE_FORMS}")
    backend = _DATABASE_SCHEMES.get(scheme.lower())
    if backend is None:
        raise ConfigurationError(f"{shown}: unsupported scheme {scheme!r}; use {_DATABASE_FORMS}")
    target, _, query = rest.partition("?")
    fields: dict[str, Any] = {}
    if backend == "memory" and target:
        raise ConfigurationError(f"{shown}: an in-memory store takes no path; use memory://")
    if backend == "sqlite":
        fields["path"] = target.removeprefix("/")
        if not target.startswith("/") or not fields["path"] or "#" in rest:
            raise ConfigurationError(
                f"{shown}: a SQLite URL names a file after three slashes, e.g. sqlite:///app.db "
                "(relative) or sqlite:////var/lib/app.db (absolute)"
            )
    values, left = read_options(
        shown,
        parse_qsl(query, keep_blank_values=True),
        options,
        _DATABASE_OPTIONS[backend],
        pass_through=backend == "postgresql",
    )
    if backend == "postgresql":
        fields["driver_url"] = _postgresql_url(shown, url, left)
    if backend == "nats":
        fields["driver_url"] = urlunsplit(urlsplit(url)._replace(query=""))
    with building(shown):
        return DatabaseURL(backend, mask_url(url), **fields, **values)


def _postgresql_url(shown: str, url: str, query: list[tuple[str, str]]) -> str:
    """The URL for the driver: the given one without this library's query options, parsed and
    rendered by SQLAlchemy (`postgresql:///db` and socket hosts kept as libpq reads them)."""
    from sqlalchemy.engine import make_url

    from eventsource._internal.postgresql import connect_target

    try:
        connect_target(url)
    except ValueError as exc:
        raise ConfigurationError(
            f"{shown}: {exc}; use postgresql://USER:PASSWORD@HOST:PORT/DB"
        ) from None
    options: dict[str, list[str]] = {}
    for name, value in query:
        options.setdefault(name, []).append(value)
    return (
        make_url(url)
        .set(query={name: vs[0] if len(vs) == 1 else tuple(vs) for name, vs in options.items()})
        .render_as_string(hide_password=False)
    )


_TECH = {"memory": ("in_memory", "InMemory"), "sqlite": ("sqlite", "SQLite"),
         "postgresql": ("postgresql", "PostgreSQL"), "nats": ("nats", "NATS")}  # fmt: skip
_PARTS = {
    # part: (package, interface, how the SQLite class names its table: "table" or "prefix")
    "snapshots": ("snapshots", "SnapshotStore", "table"),
    "checkpoints": ("repositories", "CheckpointRepository", "prefix"),
    "dead_letters": ("repositories", "DLQRepository", "prefix"),
    "outbox": ("outbox", "OutboxRepository", "table"),
    "inbox": ("outbox", "InboxRepository", "table"),
}


def _backend_class(database: DatabaseURL, package: str, interface: str) -> Any:
    """`<Tech><Interface>` from `eventsource.<package>.<tech module>`: the naming rule every
    backend follows; importing it imports its driver, hence only here, on use."""
    module, tech = _TECH[database.backend]
    return getattr(importlib.import_module(f"eventsource.{package}.{module}"), tech + interface)


def _sqlite_options(database: DatabaseURL) -> dict[str, Any]:
    options: dict[str, Any] = {"busy_timeout": database.busy_timeout}
    if database.synchronous is not None:
        options["synchronous"] = database.synchronous
    return options


def _part(database: DatabaseURL, part: str, engine: Any = None) -> Any:
    """One snapshot store or repository of `database`. PostgreSQL ones use `engine` when given
    (shared; its owner disposes of it), else an engine of their own that `close()` disposes."""
    package, interface, naming = _PARTS[part]
    if database.backend == "nats" and part not in _NATS_PARTS:
        raise ConfigurationError(
            f"{database.url}: NATS provides the event store, snapshots and checkpoints, not "
            f"the {part.replace('_', ' ')}; give them a database URL of their own"
        )
    cls = _backend_class(database, package, interface)
    if database.backend == "memory":
        return cls()
    if database.backend == "nats":
        return cls(
            database.driver_url, bucket=f"{database.prefix}{part}", replicas=database.replicas
        )
    if database.backend == "sqlite":
        name = {"table": {"table": database.prefix + part}, "prefix": {"prefix": database.prefix}}
        return cls(database.path, **name[naming], **_sqlite_options(database))
    if engine is None:
        return cls.from_url(database.driver_url, schema=database.schema, prefix=database.prefix)
    return cls(engine, schema=database.schema, prefix=database.prefix)


def _event_store(
    database: DatabaseURL, registry: EventRegistry | None, outbox: Any, engine: Any = None
) -> EventStore:
    """The event store of `database`; `outbox` is the in-memory outbox its appends fill."""
    cls = _backend_class(database, "stores", "EventStore")
    if database.backend == "memory":
        return cast(
            "EventStore", cls(registry=registry, outbox=outbox if database.outbox else None)
        )
    if database.backend == "sqlite":
        store = cls(
            database.path,
            registry=registry,
            table=f"{database.prefix}events",
            outbox=database.outbox,
            outbox_table=f"{database.prefix}outbox",
            **_sqlite_options(database),
        )
        return cast("EventStore", store)
    if database.backend == "nats":
        return cast(
            "EventStore",
            cls(
                database.driver_url,
                stream=f"{database.prefix}events",
                registry=registry,
                replicas=database.replicas,
                duplicate_window=database.duplicate_window,
            ),
        )
    options = {
        "registry": registry,
        "schema": database.schema,
        "prefix": database.prefix,
        "notify": database.notify,
        "outbox": database.outbox,
        "transient_retries": database.transient_retries,
        "retry_timeout": database.retry_timeout,
        "max_connections": database.max_connections,
    }
    if engine is None:
        return cast("EventStore", cls.from_url(database.driver_url, **options))
    return cast("EventStore", cls(engine, **options))


def create_event_store(
    url: str, *, registry: EventRegistry | None = None, **options: object
) -> EventStore:
    """The event store a database URL names, not connected yet (PostgreSQL: run
    `create_schema()`). Keyword `options` take the query options' names and win over them.
    With `memory://?outbox=true` the store fills its own `store.outbox`."""
    database = parse_database_url(url, **options)
    with building(repr(database.url)):
        outbox = _part(database, "outbox") if database.backend == "memory" else None
        return _event_store(database, registry, outbox)


def create_snapshot_store(url: str, **options: object) -> SnapshotStore:
    """The snapshot store beside the events of a database URL (same schema and prefix)."""
    return cast("SnapshotStore", _create(url, options, "snapshots"))


def create_checkpoint_repository(url: str, **options: object) -> CheckpointRepository:
    """The subscription checkpoints of a database URL."""
    return cast("CheckpointRepository", _create(url, options, "checkpoints"))


def create_dlq_repository(url: str, **options: object) -> DLQRepository:
    """The subscriptions' dead letters of a database URL."""
    return cast("DLQRepository", _create(url, options, "dead_letters"))


def create_outbox_repository(url: str, **options: object) -> OutboxRepository:
    """The outbox that a store of the same URL with `outbox=true` fills (SQLite, PostgreSQL;
    a memory:// store fills only its own `store.outbox`)."""
    return cast("OutboxRepository", _create(url, options, "outbox"))


def create_inbox_repository(url: str, **options: object) -> InboxRepository:
    """The consumer inbox of a database URL."""
    return cast("InboxRepository", _create(url, options, "inbox"))


def _create(url: str, options: Mapping[str, object], part: str) -> Any:
    database = parse_database_url(url, **options)
    with building(repr(database.url)):
        return _part(database, part)
