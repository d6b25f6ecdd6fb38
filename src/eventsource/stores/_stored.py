"""`Position` and `StoredEvent`: where a store keeps an event, and an event as read back.

`StoredEvent` decodes lazily: a store builds it from its row (`from_row`, lean or complete), the
envelope is readable at once, and the payload is decoded on the first read of `event`. Both
are re-exported by `eventsource.stores.interface`, their public home.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, TypeVar
from uuid import UUID

from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec, LeanEnvelope, utc_from_epoch
from eventsource.exceptions import (
    EventTypeNotFoundError,
    InvalidPositionError,
    SerializationError,
)

__all__ = ["Position", "StoredEvent"]


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
    _recorded_at: datetime | float | str

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
        recorded_at: datetime | float | str,
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
        its (commit, sequence) tuple and `recorded_at` as Unix epoch seconds or as ISO 8601
        text with its UTC offset: each is built when first read.
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
        if type(position) is tuple:
            # Position(*position) at a third of the cost of the frozen dataclass's __init__
            built = _new(Position)
            _set_commit(built, position[0])
            _set_sequence(built, position[1])
            position = self._position = built
        assert isinstance(position, Position)
        return position

    @property
    def recorded_at(self) -> datetime:
        recorded_at = self._recorded_at
        if not isinstance(recorded_at, datetime):
            recorded_at = self._recorded_at = (
                _fromisoformat(recorded_at)
                if isinstance(recorded_at, str)
                else utc_from_epoch(recorded_at)
            )
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
_set_commit = Position.__dict__["commit"].__set__
_set_sequence = Position.__dict__["sequence"].__set__
_fromisoformat = datetime.fromisoformat
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
