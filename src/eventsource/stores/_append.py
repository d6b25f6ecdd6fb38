"""Append rules shared by every backend: expected-version checks, stamping events onto their
stream, and recognising an idempotent retry. Backends supply only storage."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import EventIdConflictError, InvalidEventError, OptimisticLockError
from eventsource.stores.interface import AppendResult, ExpectedVersion, Position, StoredEvent

__all__ = [
    "EventRecord",
    "attach_events",
    "check_expected_version",
    "record_event",
    "replayed_result",
    "validate_expected_version",
]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One stored row, as every backend keeps it: indexed columns plus the JSON payload."""

    position: Position
    event_id: UUID
    event_type: str
    event_version: int
    aggregate_id: UUID
    aggregate_type: str
    aggregate_version: int
    tenant_id: UUID | None
    occurred_at: datetime
    recorded_at: datetime
    payload: str

    @classmethod
    def of(cls, stored: StoredEvent, tenant_id: UUID | None, occurred_at: datetime) -> EventRecord:
        """The record of a row read as `stored` (its payload the complete JSON), with the
        two columns `StoredEvent` does not carry."""
        return cls(
            position=stored.position,
            event_id=stored.event_id,
            event_type=stored.event_type,
            event_version=stored.event_version,
            aggregate_id=stored.aggregate_id,
            aggregate_type=stored.aggregate_type,
            aggregate_version=stored.version,
            tenant_id=tenant_id,
            occurred_at=occurred_at,
            recorded_at=stored.recorded_at,
            payload=stored.payload,
        )


def record_event(codec: EventCodec, record: EventRecord) -> StoredEvent:
    """The stored event of `record`, decoded by `codec` on first access."""
    return StoredEvent.from_row(
        codec,
        record.position,
        record.recorded_at,
        record.event_id,
        record.event_type,
        record.event_version,
        record.aggregate_id,
        record.aggregate_type,
        record.aggregate_version,
        record.payload,
    )


def validate_expected_version(expected_version: int) -> None:
    if type(expected_version) is not int and not isinstance(expected_version, ExpectedVersion):
        # A bool is an int to Python and a float compares equal to one: neither is a version.
        raise InvalidEventError(
            f"expected_version must be an int or an ExpectedVersion member, not "
            f"{type(expected_version).__name__} {expected_version!r}"
        )
    if expected_version < 0 and expected_version not in ExpectedVersion._value2member_map_:
        raise InvalidEventError(
            f"expected_version {expected_version} is neither a version >= 0 nor an "
            "ExpectedVersion member"
        )


def check_expected_version(aggregate_id: UUID, expected_version: int, current: int) -> None:
    """Raise `OptimisticLockError` unless a stream at `current` satisfies the expectation."""
    if expected_version == ExpectedVersion.ANY:
        return
    if expected_version == ExpectedVersion.STREAM_EXISTS:
        ok = current > 0
    elif expected_version == ExpectedVersion.NO_STREAM:
        ok = current == 0
    else:
        ok = current == expected_version
    if not ok:
        raise OptimisticLockError(aggregate_id, expectation(expected_version), current)


def expectation(expected_version: int) -> int:
    """`expected_version` as `OptimisticLockError` keeps it: the `ExpectedVersion` member for
    the special values (so its message names it), the version itself otherwise."""
    return ExpectedVersion(expected_version) if expected_version < 0 else expected_version


def attach_events(
    events: Sequence[DomainEvent], aggregate_id: UUID, aggregate_type: str, first_version: int
) -> list[DomainEvent]:
    """The events stamped with their stream id, type and versions `first_version`, ... .

    Events already carrying these values are returned as they are (no copy). An event that
    names another stream, or a batch repeating an event id, is an `InvalidEventError`.
    """
    attached: list[DomainEvent] = []
    seen: set[int] = set()
    # UUIDs compared and hashed by their `int` (UUID's own __eq__ and __hash__ run in Python)
    target = aggregate_id.int if isinstance(aggregate_id, UUID) else None
    for offset, event in enumerate(events):
        # (not isinstance: DomainEvent's metaclass is an ABCMeta, whose check runs in Python)
        if DomainEvent not in type(event).__mro__:
            raise InvalidEventError(f"expected DomainEvent instances, got {type(event).__name__}")
        fields = event.__dict__
        key = fields["event_id"].int
        if key in seen:
            raise InvalidEventError(f"event id {event.event_id} appears twice in one append")
        seen.add(key)
        own = fields["aggregate_id"].int
        if own != target and own != 0:  # 0: NIL_AGGREGATE_ID, not attached yet
            raise InvalidEventError(
                f"event {event.event_type} {event.event_id} belongs to aggregate "
                f"{event.aggregate_id}, not to stream {aggregate_id}"
            )
        own_type = fields["aggregate_type"]
        if own_type != aggregate_type and own_type != "":
            raise InvalidEventError(
                f"event {event.event_type} {event.event_id} has aggregate_type "
                f"{event.aggregate_type!r}, but is appended as {aggregate_type!r}"
            )
        version = first_version + offset
        if own != target or own_type != aggregate_type or fields["aggregate_version"] != version:
            event = event.attached(aggregate_id, aggregate_type, version)
        attached.append(event)
    return attached


def replayed_result(
    events: Sequence[DomainEvent],
    aggregate_id: UUID,
    aggregate_type: str,
    stored: Sequence[EventRecord],
) -> AppendResult:
    """The result of an append whose event ids were (partly) found in the store already.

    `stored` holds the records found for the batch's ids. If they are exactly this batch,
    the append is a retry and its original result is returned; anything else raises
    `EventIdConflictError`.
    """
    by_id = {record.event_id: record for record in stored}
    missing = [event.event_id for event in events if event.event_id not in by_id]
    if missing:
        raise EventIdConflictError(
            next(iter(by_id)),
            f"it is part of a different earlier append than this batch (event {missing[0]} "
            "of this batch is not stored)",
        )
    records = [by_id[event.event_id] for event in events]
    first = records[0].aggregate_version
    replayed: list[DomainEvent] = []
    for offset, (event, record) in enumerate(zip(events, records, strict=True)):
        if record.aggregate_id != aggregate_id or record.aggregate_version != first + offset:
            raise EventIdConflictError(
                event.event_id,
                f"at version {record.aggregate_version} of stream {record.aggregate_id}",
            )
        (again,) = attach_events([event], aggregate_id, aggregate_type, first + offset)
        if json.loads(EventCodec.encode(again)) != json.loads(record.payload):
            raise EventIdConflictError(event.event_id, "with different content")
        replayed.append(again)
    return AppendResult(
        aggregate_id=aggregate_id,
        new_version=records[-1].aggregate_version,
        events=tuple(replayed),
        positions=tuple(record.position for record in records),
        already_stored=True,
    )
