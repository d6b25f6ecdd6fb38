"""`EventSourceSettings` and the components it builds."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventsource._internal.closing import AsyncClosing
from eventsource.bus.interface import EventBus
from eventsource.config._options import building, mask_url
from eventsource.config.buses import create_event_bus, event_bus_config
from eventsource.config.databases import (
    _DATABASE_FORMS,
    _PARTS,
    _event_store,
    _part,
    parse_database_url,
)
from eventsource.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from eventsource.events.registry import EventRegistry
    from eventsource.outbox.interface import InboxRepository, OutboxRepository
    from eventsource.repositories.interface import CheckpointRepository, DLQRepository
    from eventsource.snapshots.interface import SnapshotStore
    from eventsource.stores.interface import EventStore


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
        with building(shown):
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
