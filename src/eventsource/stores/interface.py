"""The `EventStore` contract and the value types it speaks in."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar
from uuid import UUID

from eventsource._internal import telemetry
from eventsource._internal.closing import AsyncClosing
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec, LeanEnvelope, utc_from_epoch
from eventsource.exceptions import (
    EventTypeNotFoundError,
    InvalidEventError,
    InvalidPositionError,
    SerializationError,
)

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


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """An opaque, totally ordered place in a store's global feed.

    `commit` orders transactions (the transaction id on PostgreSQL, 0 on stores that commit
    one writer at a time) and `sequence` orders events within them. Positions compare with
    `<`, and `str(position)` / `Position.parse` round-trip them through text (checkpoints,
    HTTP headers).
    """

    commit: int
    sequence: int

    START: ClassVar[Position]

    def __str__(self) -> str:
        return f"{self.commit}-{self.sequence}"

    @classmethod
    def parse(cls, token: str) -> Position:
        commit, sep, sequence = token.partition("-")
        try:
            if not sep:
                raise ValueError(token)
            return cls(int(commit), int(sequence))
        except ValueError:
            raise InvalidPositionError(
                f"{token!r} is not a position token (expected the text of str(position))"
            ) from None


Position.START = Position(0, 0)


class StoredEvent:
    """An event as read from a store: the event plus where the store keeps it.

    `StoredEvent(event, position, recorded_at)` wraps an event in memory. Stores build theirs
    with `StoredEvent.from_row`: the row's envelope (ids, type, versions) is readable at once,
    and `event` decodes the payload on first access (cached). So a reader that skips an event
    by its type, id or aggregate never decodes it, and an event that cannot be decoded (a type
    this process does not register, a corrupt payload, a failing upcaster) raises its typed
    error (`EventTypeNotFoundError`, `SerializationError`, `UpcastingError`) only where `event`
    is read: a subscription treats that like a failing handler (retries, then a dead letter
    that keeps the raw `payload`).
    """

    __slots__ = (
        "_aggregate_id",
        "_aggregate_type",
        "_aggregate_version",
        "_codec",
        "_envelope",
        "_event",
        "_event_id",
        "_event_type",
        "_event_version",
        "_payload",
        "_position",
        "_recorded_at",
    )
    __match_args__ = ("event", "position", "recorded_at")

    _aggregate_id: UUID | None
    _aggregate_type: str | None
    _aggregate_version: int
    _codec: EventCodec | None
    _envelope: LeanEnvelope | None
    _event: DomainEvent | None
    _event_id: UUID | None
    _event_type: str
    _event_version: int
    _payload: str | None
    _position: Position | tuple[int, int]
    _recorded_at: datetime | float

    def __init__(self, event: DomainEvent, position: Position, recorded_at: datetime) -> None:
        self._event = event
        self._position = position
        self._recorded_at = recorded_at
        self._event_id = event.event_id
        self._event_type = event.event_type
        self._event_version = event.event_version
        self._aggregate_id = event.aggregate_id
        self._aggregate_type = event.aggregate_type
        self._aggregate_version = event.aggregate_version
        self._payload = None
        self._codec = None
        self._envelope = None

    @classmethod
    def from_row(
        cls,
        codec: EventCodec,
        position: Position | tuple[int, int],
        recorded_at: datetime | float,
        event_id: UUID | None,
        event_type: str,
        event_version: int,
        aggregate_id: UUID | None,
        aggregate_type: str | None,
        aggregate_version: int,
        payload: str,
        envelope: LeanEnvelope | None = None,
    ) -> StoredEvent:
        """A stored row whose payload `codec` decodes when `event` is first read.

        A store may leave out the ids and the aggregate type (None) where reading them would
        slow its feed down: they are then taken from the decoded event, or, for an event that
        cannot be decoded, from its payload's JSON, and `EventStore.load_envelope` reads them
        from the store when even that fails. With `envelope` the row is lean: `payload` holds
        the event's own fields, the ids and the aggregate type must be given, and `envelope`
        holds the rest of the envelope columns.

        So that a page of rows costs little more than the rows, `position` may be given as
        its (commit, sequence) tuple and `recorded_at` as Unix epoch seconds: each is built
        when first read.
        """
        self = _new(cls)
        self._event = None
        self._codec = codec
        self._position = position
        self._recorded_at = recorded_at
        self._event_id = event_id
        self._event_type = event_type
        self._event_version = event_version
        self._aggregate_id = aggregate_id
        self._aggregate_type = aggregate_type
        self._aggregate_version = aggregate_version
        self._payload = payload
        self._envelope = envelope
        return self

    @property
    def event(self) -> DomainEvent:
        """The decoded event (decoded on first access, then kept).

        Raises `EventTypeNotFoundError`, `SerializationError` or `UpcastingError` (each time it
        is read) when the stored row cannot be decoded.
        """
        event = self._event
        if event is None:
            codec = self._codec
            payload = self._payload
            assert codec is not None
            assert payload is not None
            envelope = self._envelope
            # The position names the row in errors; a (commit, sequence) tuple does as well
            # (the codec writes it as a position token) without building a Position per event.
            origin = self._position
            if envelope is None:
                event = codec.decode(self._event_type, self._event_version, payload, origin)
            else:
                assert self._event_id is not None
                assert self._aggregate_id is not None
                assert self._aggregate_type is not None
                event = codec.decode_lean(
                    self._event_type,
                    self._event_version,
                    payload,
                    self._event_id,
                    self._aggregate_id,
                    self._aggregate_type,
                    self._aggregate_version,
                    envelope,
                    origin,
                )
            self._event = event
        return event

    def decode_error(self) -> EventTypeNotFoundError | SerializationError | None:
        """The error reading `event` raises (the row cannot be decoded), or None."""
        if self._event is not None:
            return None
        try:
            self.event  # noqa: B018 - decodes and keeps the event
        except (EventTypeNotFoundError, SerializationError) as exc:
            return exc
        return None

    @property
    def decoded(self) -> bool:
        """Whether `event` is available without decoding (read before, or built from it)."""
        return self._event is not None

    @property
    def position(self) -> Position:
        position = self._position
        if not isinstance(position, Position):
            position = self._position = Position(*position)
        return position

    @property
    def recorded_at(self) -> datetime:
        recorded_at = self._recorded_at
        if not isinstance(recorded_at, datetime):
            recorded_at = self._recorded_at = utc_from_epoch(recorded_at)
        return recorded_at

    @property
    def event_id(self) -> UUID:
        event_id = self._event_id
        if event_id is None:
            event_id = self._event_id = self._unread("event_id", _as_uuid)
        return event_id

    @property
    def event_type(self) -> str:
        return self._event_type

    @property
    def event_version(self) -> int:
        """The schema version the event was stored with (upcasting may read it as newer)."""
        return self._event_version

    @property
    def aggregate_id(self) -> UUID:
        aggregate_id = self._aggregate_id
        if aggregate_id is None:
            aggregate_id = self._aggregate_id = self._unread("aggregate_id", _as_uuid)
        return aggregate_id

    @property
    def aggregate_type(self) -> str:
        aggregate_type = self._aggregate_type
        if aggregate_type is None:
            aggregate_type = self._aggregate_type = self._unread("aggregate_type", _as_text)
        return aggregate_type

    @property
    def envelope_complete(self) -> bool:
        """Whether the ids and aggregate type are known without decoding the payload."""
        return None not in (self._event_id, self._aggregate_id, self._aggregate_type)

    def _unread(self, name: str, convert: Callable[[object], _T]) -> _T:
        """An envelope value the store did not read: from the event, or, when the event cannot
        be decoded, from the payload's JSON (else the decoding error is raised)."""
        try:
            return convert(getattr(self.event, name))
        except (EventTypeNotFoundError, SerializationError) as exc:
            try:
                return convert(json.loads(self._payload or "")[name])
            except (ValueError, TypeError, KeyError):
                raise exc from None

    def set_envelope(self, event_id: UUID, aggregate_id: UUID, aggregate_type: str) -> None:
        """Fill in what the store left out (`EventStore.load_envelope` calls this)."""
        self._event_id = event_id
        self._aggregate_id = aggregate_id
        self._aggregate_type = aggregate_type

    @property
    def version(self) -> int:
        """The event's version in its aggregate stream (1 for the first event)."""
        return self._aggregate_version

    @property
    def payload(self) -> str:
        """The stored JSON text as the store returned it, decodable or not (for an event
        built in memory: its JSON encoding). For a lean row: the complete JSON, its envelope
        columns put back in front of the stored fields (`EventCodec.compose`), so that the
        text alone (a dead letter's) is enough to rebuild the event."""
        payload = self._payload
        if payload is None:
            assert self._event is not None
            return EventCodec.encode(self._event)
        envelope = self._envelope
        if envelope is not None:
            assert self._event_id is not None
            assert self._aggregate_id is not None
            assert self._aggregate_type is not None
            return EventCodec.compose(
                payload,
                self._event_type,
                self._event_version,
                self._event_id,
                self._aggregate_id,
                self._aggregate_type,
                self._aggregate_version,
                envelope,
            )
        return payload

    @property
    def lean(self) -> bool:
        """Whether the row is lean: its stored payload holds the event's own fields only, the
        envelope came from the store's columns."""
        return self._envelope is not None

    def __eq__(self, other: object) -> bool:
        if type(other) is not StoredEvent:
            return NotImplemented
        if (self.position, self.recorded_at, self._event_type) != (
            other.position,
            other.recorded_at,
            other._event_type,
        ):
            return False
        try:
            return self.event == other.event
        except (SerializationError, EventTypeNotFoundError):
            return self.payload == other.payload

    def __hash__(self) -> int:
        return hash((self.position, self._event_type))

    def __repr__(self) -> str:
        state = "" if self._event is not None else ", undecoded"
        return (
            f"StoredEvent({self._event_type} at {self.position}, "
            f"recorded_at={self.recorded_at.isoformat()}{state})"
        )


_new = object.__new__
_T = TypeVar("_T")


def _as_uuid(value: object) -> UUID:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise TypeError(value)
    return UUID(value)


def _as_text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


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
