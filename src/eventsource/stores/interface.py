"""The `EventStore` contract and the value types it speaks in."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable
from uuid import UUID

from eventsource._internal import telemetry
from eventsource._internal.closing import AsyncClosing, closing_iterator
from eventsource.events.base import DomainEvent
from eventsource.exceptions import (
    InvalidEventError,
)
from eventsource.stores._stored import Position, StoredEvent

__all__ = [
    "AppendResult",
    "AppendSignal",
    "AppendSignals",
    "EventPublisher",
    "EventStore",
    "EventStream",
    "ExpectedVersion",
    "Position",
    "ReadDirection",
    "ReadOptions",
    "StoredEvent",
    "StreamInfo",
    "StreamListing",
]


class ExpectedVersion(enum.IntEnum):
    """What an append expects of the stream; any int >= 0 means "exactly this version".

    `ANY` skips the check, `NO_STREAM` requires an empty stream (same as version 0),
    `STREAM_EXISTS` requires at least one event.
    """

    ANY = -1
    NO_STREAM = -2
    STREAM_EXISTS = -3

    @staticmethod
    def exact(version: int) -> int:
        if version < 0:
            raise InvalidEventError(f"an exact expected version must be >= 0, got {version}")
        return version


class ReadDirection(enum.Enum):
    FORWARD = "forward"
    BACKWARD = "backward"


@dataclass(frozen=True, slots=True)
class EventStream:
    """The events of one aggregate stream, in version order."""

    aggregate_id: UUID
    aggregate_type: str | None
    events: list[DomainEvent]
    version: int
    """The version of the last event read (0 when none was read)."""

    @property
    def is_empty(self) -> bool:
        return not self.events

    def __len__(self) -> int:
        return len(self.events)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append stored: the events as stored (with ids and versions) and their positions."""

    aggregate_id: UUID
    new_version: int
    events: tuple[DomainEvent, ...]
    positions: tuple[Position, ...]
    already_stored: bool = False
    """True when every event was already stored by an earlier append (an idempotent retry)."""

    @property
    def last_position(self) -> Position | None:
        """Position of the last event: a consistency token for read-your-writes."""
        return self.positions[-1] if self.positions else None


def _type_names(types: Iterable[str | type[DomainEvent]] | str) -> frozenset[str]:
    if isinstance(types, str):
        return frozenset((types,))
    return frozenset(t if isinstance(t, str) else t.type_name() for t in types)


DEFAULT_BATCH_SIZE = 1000
"""`ReadOptions.batch_size` unless given."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadOptions:
    """How to read a stream (`read_stream`) or the global feed (`read_all`).

    Versions are inclusive; `after` is exclusive (resume after the last position handled).
    Filters combine with AND. `batch_size` is the page size backends fetch at a time, so a
    read of any length holds a bounded number of events in memory. (With the default or a
    larger `batch_size`, PostgreSQL reads the first page of a stream up to 10,000 events
    long, so a typical stream loads in one round trip.)
    """

    direction: ReadDirection = ReadDirection.FORWARD
    from_version: int = 1
    to_version: int | None = None
    after: Position | None = None
    limit: int | None = None
    event_types: Collection[str] | None = None
    """Event type names to keep (event classes are accepted too); stored as a frozenset."""
    aggregate_type: str | None = None
    tenant_id: UUID | None = None
    from_timestamp: datetime | None = None
    to_timestamp: datetime | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    partition: tuple[int, int] | None = None
    """`(p, n)`: only the events of the aggregates with `aggregate_id.int % n == p` (partition
    p of n, as `subscribe_partitioned` splits a subscription; n from 1 to 2**31). Every row
    belongs to exactly one partition. A store that filters on it in its own query says so with
    `EventStore.filters_partitions`."""

    def __post_init__(self) -> None:
        if self.event_types is not None and not isinstance(self.event_types, frozenset):
            object.__setattr__(self, "event_types", _type_names(self.event_types))
        if self.partition is not None:
            _check_partition(self.partition)
        if self.limit is not None and self.limit < 0:
            raise InvalidEventError(f"limit must be >= 0, got {self.limit}")
        if self.batch_size < 1:
            raise InvalidEventError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def forward(self) -> bool:
        return self.direction is ReadDirection.FORWARD


_MAX_PARTITIONS = 2**31
"""Partition counts up to 2**31 keep the SQL stores' modulo of a uuid within 64-bit integers."""


def _check_partition(partition: object) -> None:
    if (
        not isinstance(partition, tuple)
        or len(partition) != 2
        or not all(type(part) is int for part in partition)
    ):
        raise InvalidEventError(f"partition must be a tuple (p, n) of two ints, got {partition!r}")
    p: int = partition[0]
    n: int = partition[1]
    if not 1 <= n <= _MAX_PARTITIONS or not 0 <= p < n:
        raise InvalidEventError(
            f"partition (p, n) needs 1 <= n <= 2**31 and 0 <= p < n, got {partition!r}"
        )


class AppendSignal:
    """Wake-ups for readers of the global feed: one per committed append (or more).

    A signal only says "something was appended": the reader then reads the feed. Signals can be
    lost (a dropped connection, another process's append on a store that only signals within
    its process), so readers also poll. `notify` may be called from any thread.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.received = 0

    def notify(self, *_: object) -> None:
        self.received += 1
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._event.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        """Wait for a signal since the last `wait` (wrap in `asyncio.timeout` to bound it)."""
        await self._event.wait()
        self._event.clear()


class AppendSignals:
    """In-process append signals, for stores whose appends all pass through this object."""

    def __init__(self) -> None:
        self._signals: set[AppendSignal] = set()

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[AppendSignal]:
        """Signals for appends made through this store object (other processes: poll)."""
        signal = AppendSignal()
        self._signals.add(signal)
        try:
            yield signal
        finally:
            self._signals.discard(signal)

    def signal_append(self) -> None:
        for signal in list(self._signals):
            signal.notify()


class EventPublisher(Protocol):
    """Anything that can hand saved events on (an event bus, an outbox writer)."""

    async def publish(self, events: Sequence[DomainEvent]) -> None: ...


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One stream as `StreamListing.list_streams` reports it."""

    aggregate_id: UUID
    aggregate_type: str
    version: int
    """The stream's current version: its number of events (versions run 1, 2, 3, ...)."""
    last_recorded_at: datetime
    """When the store recorded the stream's last event."""


@runtime_checkable
class StreamListing(Protocol):
    """An optional capability of a store: listing its streams (operators' tools, the
    `eventsource streams list` command). The in-memory, SQLite and PostgreSQL stores have it
    and pass `eventsource.testing.StreamListingContract`; a store without it (NATS, the gRPC
    client) is simply not an instance of this Protocol."""

    async def list_streams(
        self, *, aggregate_type: str | None = None, after: UUID | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """Up to `limit` streams (of `aggregate_type` when given) in ascending aggregate id
        order, starting after the id `after` (exclusive): pass the last id of a page to get
        the next one. `InvalidEventError` when `limit` is below 1."""
        ...


class EventStore(AsyncClosing, ABC):
    """Durable, append-only storage of aggregate event streams plus one ordered global feed.

    A stream is identified by its aggregate id; versions in it run 1, 2, 3, ... without
    gaps. Every backend passes `eventsource.testing.EventStoreContract`.
    """

    backend: ClassVar[str] = "custom"
    """The backend's name in telemetry (`eventsource.store` attribute)."""
    enable_tracing: bool = True
    """False: appends through this store make no span and record no metric."""
    filters_partitions: ClassVar[bool] = False
    """Whether `read_all` honours `ReadOptions.partition` in its own query. A partitioned
    subscription then reads only its partition's events; on a store that does not (a custom
    one, a wrapper), it reads the whole feed and skips the other partitions' events itself."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A store may implement `append_events` itself (the package guide's way) instead of
        # `_append_events`: it then owns the whole append, telemetry included.
        if "append_events" in cls.__dict__ and getattr(
            cls._append_events, "__isabstractmethod__", False
        ):
            cls._append_events = _GuideAppend._append_events  # type: ignore[method-assign,assignment]

    async def append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: Sequence[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        """Append `events` atomically, all or none, if the stream matches `expected_version`.

        Events not yet attached to the stream get its id, type and their version stamped
        in. Raises `OptimisticLockError` when the stream is at another version, and
        `EventIdConflictError` when an event id is already stored for other content.
        Re-appending exactly the events of an earlier append returns that append's result
        with `already_stored=True`.
        """
        events = list(events)
        if not self.enable_tracing:
            return await self._append_events(aggregate_id, aggregate_type, events, expected_version)
        with telemetry.appending(
            self.backend, aggregate_id, aggregate_type, events, expected_version
        ) as appending:
            result = await self._append_events(
                aggregate_id, aggregate_type, events, expected_version
            )
            appending.done(result)
        return result

    @abstractmethod
    async def _append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        """The backend's append (see `append_events`, which adds telemetry around it)."""

    @abstractmethod
    def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Iterate one stream's events in version order (or reverse with BACKWARD)."""

    async def read_stream_events(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[Iterable[DomainEvent]]:
        """The decoded events of `read_stream(aggregate_id, options)`, a page at a time: what
        rebuilding an aggregate needs, without a `StoredEvent` per event or an async hand-off
        per event. Consume each page before asking for the next: the bundled SQL stores
        decode its events from their rows as the page is iterated (so each can die once
        applied). A row that cannot be decoded raises its typed error
        (`EventTypeNotFoundError`, `SerializationError`, `UpcastingError`) where it is
        reached. This default pages `read_stream`."""
        page: list[DomainEvent] = []
        size = (options or ReadOptions()).batch_size
        async with closing_iterator(self.read_stream(aggregate_id, options)) as stream:
            async for stored in stream:
                page.append(stored.event)
                if len(page) >= size:
                    yield page
                    page = []
        if page:
            yield page

    @abstractmethod
    def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        """Iterate every stream's events in global order, resuming after `options.after`.

        A reader that keeps resuming from the last position it saw receives every
        committed event exactly once.
        """

    async def count_events(self, options: ReadOptions | None = None) -> int:
        """How many events `read_all(options)` would yield now (up to `options.limit`),
        without reading them: lag and progress reports use it. This default counts by
        reading; the bundled stores answer it with a count query."""
        count = 0
        async for _ in self.read_all(options):
            count += 1
        return count

    @abstractmethod
    async def current_position(self) -> Position:
        """The position of the last event `read_all` can return now (`Position.START` when
        empty): a reader resuming after it misses no event committed later."""

    @abstractmethod
    async def get_stream_version(self, aggregate_id: UUID) -> int:
        """The stream's current version (0 when it has no events)."""

    @abstractmethod
    async def event_exists(self, event_id: UUID) -> bool: ...

    async def load_envelope(self, stored: StoredEvent) -> None:
        """Make sure `stored` knows its ids and aggregate type without decoding its payload
        (a store whose feed leaves them out reads them now). Subscriptions call it before
        parking an undecodable event; stores that always read them need not override it."""

    @abstractmethod
    async def get_event(self, event_id: UUID) -> StoredEvent:
        """The stored event with this id, or `EventNotFoundError`."""

    async def get_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str | None = None,
        from_version: int = 0,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
        *,
        to_version: int | None = None,
    ) -> EventStream:
        """All events of a stream, as an `EventStream`: versions from `from_version`
        (inclusive; 0 and 1 both mean the first event) to `to_version`, and occurred between
        `from_timestamp` and `to_timestamp` (inclusive) when given."""
        options = ReadOptions(
            from_version=from_version,
            to_version=to_version,
            aggregate_type=aggregate_type,
            from_timestamp=from_timestamp,
            to_timestamp=to_timestamp,
        )
        events = [stored.event async for stored in self.read_stream(aggregate_id, options)]
        version = events[-1].aggregate_version if events else 0
        return EventStream(aggregate_id, aggregate_type, events, version)

    async def get_events_by_type(
        self,
        aggregate_type: str,
        tenant_id: UUID | None = None,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
    ) -> list[DomainEvent]:
        """Every event of the aggregates of `aggregate_type` (of one tenant when given), in
        global order; `read_all` with `ReadOptions(aggregate_type=...)` is the streaming form."""
        options = ReadOptions(
            aggregate_type=aggregate_type,
            tenant_id=tenant_id,
            from_timestamp=from_timestamp,
            to_timestamp=to_timestamp,
        )
        return [stored.event async for stored in self.read_all(options)]

    @abstractmethod
    def listen(self) -> contextlib.AbstractAsyncContextManager[AppendSignal]:
        """Signals for committed appends while the block runs (for subscriptions).

        Which appends signal depends on the backend (PostgreSQL: every process, through
        LISTEN/NOTIFY; SQLite and in memory: this store object's own appends), so readers
        always poll as well.
        """


class _GuideAppend:
    async def _append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        """The append of a store that implements `append_events` itself."""
        store: EventStore = self  # type: ignore[assignment]
        return await store.append_events(aggregate_id, aggregate_type, events, expected_version)
