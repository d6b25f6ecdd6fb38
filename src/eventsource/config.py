"""Backends chosen by configuration: a URL (or environment variables) names the store and the
bus, so an application moves from `memory://` in tests to PostgreSQL and Redis in production
without code changes.

Database URLs (event store, snapshots, checkpoints, dead letters, outbox, inbox):

- `memory://`, option `outbox`;
- `sqlite:///relative.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:` (also
  `sqlite+aiosqlite://`), options `prefix`, `outbox`, `busy_timeout`, `synchronous`;
- `postgresql://user:password@host:port/db` (also `postgres://`, `postgresql+asyncpg://`),
  options `schema`, `prefix`, `outbox`, `notify`, `max_connections`, `transient_retries`; other
  query parameters (`ssl=require`, ...) go to the driver.

Bus URLs: `memory://`, `redis://host:port/db` (`rediss://`), `amqp://user:password@host/vhost`
(`amqps://`), `kafka://host:port,host2:port`. Their query parameters are the fields of the bus's
`*Config` (`group`, `consumer` and, for Redis, `prefix` are short for `consumer_group`,
`consumer_name` and `stream_prefix`). Keyword options take the same names and win over the URL.

Parsed values are handed to constructors, never formatted into SQL (the backends quote
identifiers); error messages and reprs show URLs with their passwords masked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import re
import types
import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID

from eventsource._internal.closing import AsyncClosing
from eventsource._internal.sqlite import synchronous_mode
from eventsource.bus.interface import EventBus, EventBusConfig
from eventsource.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from eventsource.events.registry import EventRegistry
    from eventsource.outbox.interface import InboxRepository, OutboxRepository
    from eventsource.repositories.interface import CheckpointRepository, DLQRepository
    from eventsource.snapshots.interface import SnapshotStore
    from eventsource.stores.interface import EventStore

__all__ = [
    "ConfigurationError",
    "DatabaseURL",
    "EventSourceComponents",
    "EventSourceSettings",
    "create_checkpoint_repository",
    "create_dlq_repository",
    "create_event_bus",
    "create_event_store",
    "create_inbox_repository",
    "create_outbox_repository",
    "create_snapshot_store",
    "event_bus_config",
    "mask_url",
    "parse_database_url",
]


_SECRET_WORDS = ("password", "secret", "token")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def mask_url(url: str) -> str:
    """`url` with its password (and query values named like a secret) replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    masked = url
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        masked = masked.replace(parts.netloc, f"{userinfo.partition(':')[0]}:***@{host}", 1)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(_secret(key) for key, _ in query):
        hidden = [(key, "***" if _secret(key) else value) for key, value in query]
        masked = masked.replace(parts.query, urlencode(hidden), 1)
    return masked


def _convert(value: object, hint: Any) -> object:
    """`value` as the type `hint` names, read from text when it is text (URL queries,
    environment variables); `ValueError` saying what was expected."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        for choice in typing.get_args(hint):
            if value == choice or (isinstance(value, str) and value == str(choice)):
                return choice
        raise ValueError(f"expected one of {', '.join(map(repr, typing.get_args(hint)))}")
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
            return None
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _convert(value, inner)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ValueError("expected true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return _parse(value, int, "an integer")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return _parse(value, float, "a number")
    if hint is UUID:
        return value if isinstance(value, UUID) else UUID(str(value))
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError("expected text")
    if isinstance(value, str):
        raise ValueError("cannot be given as text; pass it as a keyword option")
    return value


def _parse(value: object, kind: type[int] | type[float], expected: str) -> object:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return kind(value)
    raise ValueError(f"expected {expected}")


def _options(
    where: str,
    query: list[tuple[str, str]],
    keywords: Mapping[str, object],
    accepted: Mapping[str, Any],
    aliases: Mapping[str, str] | None = None,
    *,
    pass_through: bool = False,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The options of a URL query merged with keyword options (keywords win), converted to
    the types `accepted` names; and, with `pass_through`, the query parameters left over for
    the driver (else those are an error)."""
    aliases = aliases or {}
    given: dict[str, object] = {}
    left: list[tuple[str, str]] = []
    unknown: list[str] = []
    for key, value in query:
        name = aliases.get(key, key)
        if name in given:
            raise ConfigurationError(f"{where}: give the {key} once (?{key}=...)")
        if name in accepted:
            given[name] = value
        elif pass_through:
            left.append((key, value))
        else:
            unknown.append(key)
    from_keywords: set[str] = set()
    for key, keyword in keywords.items():
        name = aliases.get(key, key)
        if name in from_keywords:
            raise ConfigurationError(f"{where}: {name} is given twice (once by an alias)")
        if name in accepted:
            given[name] = keyword
            from_keywords.add(name)
        else:
            unknown.append(key)
    if unknown:
        raise ConfigurationError(
            f"{where}: no query options or keywords named {', '.join(map(repr, unknown))}; "
            f"the accepted ones are {', '.join(sorted({*accepted, *aliases}))}"
        )
    converted: dict[str, Any] = {}
    for name, raw in given.items():
        try:
            converted[name] = _convert(raw, accepted[name])
        except ValueError as exc:
            raise ConfigurationError(f"{where}: option {name}={raw!r}: {exc}") from None
    return converted, left


@contextlib.contextmanager
def _building(where: str) -> Iterator[None]:
    """Constructor errors as `ConfigurationError`: a missing driver (the message names the
    pip extra) or a value the backend refuses."""
    try:
        yield
    except ConfigurationError:
        raise
    except ImportError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


# -- databases ---------------------------------------------------------------------------------

Backend = Literal["memory", "sqlite", "postgresql"]

_DATABASE_SCHEMES: dict[str, Backend] = {
    "memory": "memory",
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "postgresql+asyncpg": "postgresql",
}
_DATABASE_FORMS = "memory://, sqlite:///PATH, sqlite:///:memory: or postgresql://USER@HOST/DB"
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
    },
}


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
    transient_retries: int = 3
    busy_timeout: float = 10.0
    synchronous: str | None = None

    def __post_init__(self) -> None:
        if not self.schema:
            raise ValueError("schema must not be empty")
        if self.max_connections < 1 or self.transient_retries < 0 or self.busy_timeout < 0:
            raise ValueError(
                "need max_connections >= 1, transient_retries >= 0 and busy_timeout >= 0"
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
        parts = urlsplit(self.driver_url)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
        return f"PostgreSQL {where}, schema {self.schema!r}"


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
    values, left = _options(
        shown,
        parse_qsl(query, keep_blank_values=True),
        options,
        _DATABASE_OPTIONS[backend],
        pass_through=backend == "postgresql",
    )
    if backend == "postgresql":
        fields["driver_url"] = _postgresql_url(shown, url, left)
    with _building(shown):
        return DatabaseURL(backend, mask_url(url), **fields, **values)


def _postgresql_url(shown: str, url: str, query: list[tuple[str, str]]) -> str:
    """The URL for the driver: the given one without this library's query options."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    parts = urlsplit(url)
    driver_url = urlunsplit(parts._replace(query=urlencode(query)))
    try:
        _ = parts.port
        make_url(driver_url)
    except (ValueError, ArgumentError):
        # Neither message is shown: both quote the URL, password included.
        raise ConfigurationError(
            f"{shown}: not a valid PostgreSQL URL; use postgresql://USER:PASSWORD@HOST:PORT/DB"
        ) from None
    return driver_url


_TECH = {"memory": ("in_memory", "InMemory"), "sqlite": ("sqlite", "SQLite"),
         "postgresql": ("postgresql", "PostgreSQL")}  # fmt: skip
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
    cls = _backend_class(database, package, interface)
    if database.backend == "memory":
        return cls()
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
    options = {
        "registry": registry,
        "schema": database.schema,
        "prefix": database.prefix,
        "notify": database.notify,
        "outbox": database.outbox,
        "transient_retries": database.transient_retries,
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
    with _building(repr(database.url)):
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
    with _building(repr(database.url)):
        return _part(database, part)


# -- buses -------------------------------------------------------------------------------------

_BUSES = {
    # scheme: (module, class prefix)
    "memory": ("in_memory", "InMemory"),
    "redis": ("redis", "Redis"),
    "rediss": ("redis", "Redis"),
    "amqp": ("rabbitmq", "RabbitMQ"),
    "amqps": ("rabbitmq", "RabbitMQ"),
    "kafka": ("kafka", "Kafka"),
}
_BUS_FORMS = (
    "memory://, redis://HOST:PORT/DB, rediss://..., amqp://USER:PASSWORD@HOST/VHOST, "
    "amqps://... or kafka://HOST:PORT,HOST2:PORT"
)
_FROM_URL = ("url", "bootstrap_servers")
_REDIS_DB = re.compile(r"/?\d*")


def _bus(url: str, options: Mapping[str, object]) -> tuple[EventBusConfig, type[EventBus]]:
    """The config a bus URL and keyword options describe, and the bus class to give it to."""
    shown = repr(mask_url(url))
    try:
        parts = urlsplit(url)
        _ = parts.port if parts.scheme != "kafka" else None  # a bad port raises ValueError
    except ValueError:
        raise ConfigurationError(f"{shown} is not a valid bus URL; use {_BUS_FORMS}") from None
    if parts.scheme.lower() not in _BUSES or not url.partition(":")[2].startswith("//"):
        raise ConfigurationError(f"{shown}: unsupported bus URL; use {_BUS_FORMS}")
    scheme = parts.scheme.lower()
    module, tech = _BUSES[scheme]
    with _building(shown):
        found = importlib.import_module(f"eventsource.bus.{module}")
    config_cls: type[EventBusConfig] = getattr(found, f"{tech}EventBusConfig")
    hints = typing.get_type_hints(config_cls)
    accepted = {
        f.name: hints[f.name]
        for f in dataclasses.fields(config_cls)
        if f.init and f.name not in _FROM_URL
    }
    aliases = {"group": "consumer_group", "consumer": "consumer_name"}
    if module == "redis":
        aliases["prefix"] = "stream_prefix"
    query = parse_qsl(parts.query, keep_blank_values=True)
    values, _ = _options(shown, query, options, accepted, aliases)
    location = url.partition("#")[0].partition("?")[0]
    if parts.fragment:
        raise ConfigurationError(f"{shown}: a bus URL takes no #fragment")
    if module == "in_memory" and location.lower() != "memory://":
        raise ConfigurationError(f"{shown}: an in-memory bus takes no host or path; use memory://")
    if module == "redis" and not _REDIS_DB.fullmatch(parts.path):
        raise ConfigurationError(f"{shown}: the path of a Redis URL is a database number, e.g. /0")
    if module == "kafka":
        servers = parts.netloc.split(",")
        if "@" in parts.netloc or parts.path.strip("/") or not all(servers):
            raise ConfigurationError(
                f"{shown}: a Kafka URL lists servers only, e.g. kafka://HOST:9092,HOST2:9092 "
                "(TLS and SASL settings go in the client_options keyword)"
            )
        values["bootstrap_servers"] = parts.netloc
    elif module != "in_memory":
        values["url"] = location
    with _building(shown):
        config = config_cls(**values)
    return config, getattr(found, f"{tech}EventBus")


def event_bus_config(url: str, **options: object) -> EventBusConfig:
    """The `*EventBusConfig` a bus URL and keyword options (which win) describe, for
    inspection or to build the bus yourself; `ConfigurationError` when they describe none."""
    return _bus(url, options)[0]


def create_event_bus(
    url: str, *, registry: EventRegistry | None = None, **options: object
) -> EventBus:
    """The bus a URL names, not connected yet: it connects on first publish or on
    `start_consuming()`. Options are the fields of its `*EventBusConfig`, e.g.
    `create_event_bus("redis://localhost:6379/0?group=billing", max_attempts=3)`."""
    config, bus_cls = _bus(url, options)
    return bus_cls(config, registry=registry)


# -- settings ----------------------------------------------------------------------------------


@dataclass(eq=False)
class EventSourceComponents(AsyncClosing):
    """What `EventSourceSettings.build()` makes: every part on one database (PostgreSQL: one
    shared `engine`, disposed of by `close()`) and the bus, if a bus URL was given."""

    event_store: EventStore
    snapshot_store: SnapshotStore
    checkpoints: CheckpointRepository
    dead_letters: DLQRepository
    outbox: OutboxRepository
    inbox: InboxRepository
    bus: EventBus | None = None
    engine: AsyncEngine | None = None

    async def create_schema(self) -> None:
        """Create or upgrade the tables (PostgreSQL: every migration, concurrency-safe; SQLite:
        the event store's tables, the others create theirs on first use; memory: nothing)."""
        create = getattr(self.event_store, "create_schema", None)
        connect = getattr(self.event_store, "connect", None)
        if create is not None:
            await create()
        elif connect is not None:
            await connect()

    async def close(self) -> None:
        """Shut the bus down, close every part, then dispose of the shared engine; the first
        error is raised once everything has been tried."""
        errors: list[Exception] = []
        closers: list[Callable[[], Awaitable[object]]] = []
        if self.bus is not None:
            closers.append(self.bus.shutdown)
        parts = (self.event_store, self.snapshot_store, self.checkpoints, self.dead_letters)
        closers += [part.close for part in (*parts, self.outbox, self.inbox)]
        if self.engine is not None:
            closers.append(self.engine.dispose)
        for close in closers:
            try:
                await close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@dataclass(frozen=True, kw_only=True)
class EventSourceSettings:
    """Which backends an application uses: the database URL of the event store (and of the
    snapshots, checkpoints, dead letters, outbox and inbox beside it), an optional bus URL and
    consumer group (which wins over the bus URL's `group`). Both URLs are checked at once; the
    repr masks their passwords."""

    event_store_url: str
    bus_url: str | None = None
    consumer_group: str | None = None

    def __post_init__(self) -> None:
        parse_database_url(self.event_store_url)
        if self.bus_url is not None:
            event_bus_config(self.bus_url, **self._bus_options())

    def __repr__(self) -> str:
        bus = mask_url(self.bus_url) if self.bus_url is not None else None
        return (
            f"EventSourceSettings(event_store_url={mask_url(self.event_store_url)!r}, "
            f"bus_url={bus!r}, consumer_group={self.consumer_group!r})"
        )

    @classmethod
    def from_env(
        cls, prefix: str = "EVENTSOURCE_", environ: Mapping[str, str] | None = None
    ) -> EventSourceSettings:
        """Settings from `{prefix}EVENT_STORE_URL` (required), `{prefix}BUS_URL` and
        `{prefix}CONSUMER_GROUP`, read from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        store_url = env.get(f"{prefix}EVENT_STORE_URL")
        if not store_url:
            raise ConfigurationError(
                f"{prefix}EVENT_STORE_URL is not set; set it to {_DATABASE_FORMS}"
            )
        return cls(
            event_store_url=store_url,
            bus_url=env.get(f"{prefix}BUS_URL") or None,
            consumer_group=env.get(f"{prefix}CONSUMER_GROUP") or None,
        )

    def _bus_options(self) -> dict[str, object]:
        return {"consumer_group": self.consumer_group} if self.consumer_group else {}

    def build(self, *, registry: EventRegistry | None = None) -> EventSourceComponents:
        """Every component, constructed but not connected: run `create_schema()` first, and
        `close()` (or `async with`) at the end."""
        database = parse_database_url(self.event_store_url)
        shown = repr(database.url)
        if database.backend == "sqlite" and database.path == ":memory:":
            raise ConfigurationError(
                f"{shown}: each connection to sqlite:///:memory: opens a database of its own, so "
                "the components could not share it; use a file (sqlite:///app.db) or memory://"
            )
        bus = None
        if self.bus_url is not None:
            bus = create_event_bus(self.bus_url, registry=registry, **self._bus_options())
        with _building(shown):
            engine = None
            if database.backend == "postgresql":
                from eventsource._internal.postgresql import create_engine

                # The store and the five other parts each keep connections checked out
                # (`max_connections` and 4 each); the overflow serves sessions of `using()`.
                size = database.max_connections + 4 * len(_PARTS)
                engine = create_engine(database.driver_url, pool_size=size, max_overflow=10)
            parts = {part: _part(database, part, engine) for part in _PARTS}
            store = _event_store(database, registry, parts["outbox"], engine)
        return EventSourceComponents(
            event_store=store,
            snapshot_store=parts["snapshots"],
            checkpoints=parts["checkpoints"],
            dead_letters=parts["dead_letters"],
            outbox=parts["outbox"],
            inbox=parts["inbox"],
            bus=bus,
            engine=engine,
        )
