"""The JetStream message of one `NATSEventStore` append: its body, headers and reading back.

One append is one message on `<prefix>.<aggregate type>.<aggregate id>`. Its body is JSON::

    {"t": aggregate type, "a": aggregate id, "r": recorded at (Unix seconds),
     "e": [[event id, event type, schema version, stream version, tenant id or null,
            occurred at (Unix seconds), complete JSON of the event], ...]}

and its headers carry what appends and scans need without reading the body: `Es-Version`
(the stream's version after this append), `Es-Count` (events in it), `Es-Ids` (their ids,
comma-separated), `Nats-Msg-Id` (JetStream's de-duplication key: the first event's id) and
`Nats-Expected-Last-Subject-Sequence` (the optimistic concurrency check).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsource._internal.nats import RawMessage
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec, utc_from_epoch
from eventsource.exceptions import EventStoreError
from eventsource.stores._append import EventRecord
from eventsource.stores.interface import Position, ReadOptions, StoredEvent

__all__ = [
    "Batch",
    "batch_headers",
    "encode_body",
    "header_size",
    "index_of",
    "position",
    "version_of",
]

VERSION = "Es-Version"
COUNT = "Es-Count"
IDS = "Es-Ids"


def encode_body(
    events: Sequence[DomainEvent], aggregate_id: UUID, aggregate_type: str, recorded_at: float
) -> bytes:
    """The body of the message appending `events` (stamped with their versions); raises
    `SerializationError` for an event that could not be read back."""
    rows = [
        [
            str(event.event_id),
            event.event_type,
            event.event_version,
            event.aggregate_version,
            None if event.tenant_id is None else str(event.tenant_id),
            event.occurred_at.timestamp(),
            EventCodec.encode(event),
        ]
        for event in events
    ]
    return json.dumps(
        {"t": aggregate_type, "a": str(aggregate_id), "r": recorded_at, "e": rows},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def batch_headers(events: Sequence[DomainEvent], last_seq: int) -> dict[str, str]:
    """The headers of that message, for a stream whose last message on its subject is
    `last_seq` (0: none)."""
    ids = [str(event.event_id) for event in events]
    return {
        "Nats-Msg-Id": ids[0],
        "Nats-Expected-Last-Subject-Sequence": str(last_seq),
        VERSION: str(events[-1].aggregate_version),
        COUNT: str(len(events)),
        IDS: ",".join(ids),
    }


def header_size(headers: Mapping[str, str]) -> int:
    """The bytes `headers` take on the wire (`NATS/1.0\\r\\n`, `key: value\\r\\n` each, and
    the closing `\\r\\n`)."""
    return 12 + sum(len(k) + len(v.encode()) + 4 for k, v in headers.items())


def position(seq: int, index: int) -> Position:
    """The position of event `index` of the message at stream sequence `seq`: `commit` is
    the sequence, `sequence` the sequence plus the index. (So the difference of two
    positions' `sequence`, which subscription health reports as events behind, counts the
    appends between them plus the events of the newer one's append before it: exact when
    appends hold one event each.)"""
    return Position(seq, seq + index)


def index_of(position: Position) -> int:
    """The index in its message of the event at `position` (-1 for `Position.START`)."""
    return position.sequence - position.commit if position.commit else -1


def version_of(message: RawMessage | None) -> int:
    """The stream version a message leaves its stream at (0 for no message)."""
    if message is None:
        return 0
    return int(message.headers[VERSION])


def holds(message: RawMessage, event_id: UUID) -> bool:
    """Whether the message's `Es-Ids` header lists `event_id`."""
    return str(event_id) in message.headers.get(IDS, "").split(",")


@dataclass(slots=True)
class Batch:
    """A message's body, parsed: the events of one append."""

    seq: int
    aggregate_type: str
    aggregate_id: UUID
    recorded_at: float
    rows: list[list[object]]

    @classmethod
    def of(cls, message: RawMessage) -> Batch:
        try:
            body = json.loads(message.data)
            return cls(message.seq, body["t"], UUID(body["a"]), body["r"], body["e"])
        except (ValueError, KeyError, TypeError) as exc:
            raise EventStoreError(
                f"NATS stream message {message.seq} on {message.subject!r} is not an "
                f"eventsource append ({exc!r}); was something else published to the store's "
                "subjects?"
            ) from exc

    def first_version(self) -> int:
        version: int = self.rows[0][3]  # type: ignore[assignment]
        return version

    def stored(
        self, codec: EventCodec, options: ReadOptions | None, indexes: range | None = None
    ) -> Iterator[StoredEvent]:
        """The events of the batch that `options` keeps (its event, tenant and time filters;
        streams and positions are the caller's), at `indexes` (all when None)."""
        rows = self.rows
        chosen = range(len(rows)) if indexes is None else indexes
        types = tenant = low = high = None
        if options is not None:
            types = options.event_types
            tenant = None if options.tenant_id is None else str(options.tenant_id)
            low = None if options.from_timestamp is None else options.from_timestamp.timestamp()
            high = None if options.to_timestamp is None else options.to_timestamp.timestamp()
        for index in chosen:
            row = rows[index]
            event_id, event_type, event_version, version, row_tenant, occurred, payload = row
            if types is not None and event_type not in types:
                continue
            if tenant is not None and row_tenant != tenant:
                continue
            if low is not None and occurred < low:  # type: ignore[operator]
                continue
            if high is not None and occurred > high:  # type: ignore[operator]
                continue
            yield StoredEvent.from_row(
                codec,
                (self.seq, self.seq + index),
                self.recorded_at,
                UUID(event_id),  # type: ignore[arg-type]
                event_type,  # type: ignore[arg-type]
                event_version,  # type: ignore[arg-type]
                self.aggregate_id,
                self.aggregate_type,
                version,  # type: ignore[arg-type]
                payload,  # type: ignore[arg-type]
            )

    def records(self) -> list[EventRecord]:
        """The batch as `EventRecord`s (to compare a retried append with what is stored)."""
        recorded = utc_from_epoch(self.recorded_at)
        return [
            EventRecord(
                position=Position(self.seq, self.seq + index),
                event_id=UUID(row[0]),  # type: ignore[arg-type]
                event_type=row[1],  # type: ignore[arg-type]
                event_version=row[2],  # type: ignore[arg-type]
                aggregate_id=self.aggregate_id,
                aggregate_type=self.aggregate_type,
                aggregate_version=row[3],  # type: ignore[arg-type]
                tenant_id=None if row[4] is None else UUID(row[4]),  # type: ignore[arg-type]
                occurred_at=_from_epoch(row[5]),
                recorded_at=recorded,
                payload=row[6],  # type: ignore[arg-type]
            )
            for index, row in enumerate(self.rows)
        ]


def _from_epoch(value: object) -> datetime:
    return utc_from_epoch(float(value))  # type: ignore[arg-type]
