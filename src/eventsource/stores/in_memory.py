"""`InMemoryEventStore`: the full store contract in process memory.

Events are kept in their stored JSON form and decoded on every read, exactly like a
database-backed store, so serialization bugs, upcasting and registry problems show up in unit
tests instead of in production.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Protocol
from uuid import UUID

from eventsource._internal.clock import utc_now
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import EventNotFoundError
from eventsource.stores._append import (
    EventRecord,
    attach_events,
    check_expected_version,
    record_event,
    replayed_result,
    validate_expected_version,
)
from eventsource.stores._stream_list import check_limit
from eventsource.stores.interface import (
    AppendResult,
    AppendSignal,
    AppendSignals,
    EventStore,
    Position,
    ReadOptions,
    StoredEvent,
    StreamInfo,
)

__all__ = ["InMemoryEventStore"]


def _matches(record: EventRecord, options: ReadOptions) -> bool:
    if options.event_types is not None and record.event_type not in options.event_types:
        return False
    if options.aggregate_type is not None and record.aggregate_type != options.aggregate_type:
        return False
    if options.tenant_id is not None and record.tenant_id != options.tenant_id:
        return False
    if options.partition is not None:
        partition, partitions = options.partition
        if record.aggregate_id.int % partitions != partition:
            return False
    if options.from_timestamp is not None and record.occurred_at < options.from_timestamp:
        return False
    return options.to_timestamp is None or record.occurred_at <= options.to_timestamp


class OutboxSink(Protocol):
    """What `InMemoryEventStore` writes its outbox to (`InMemoryOutboxRepository`)."""

    def add_now(self, events: Sequence[DomainEvent]) -> None: ...


class InMemoryEventStore(EventStore):
    """A thread-safe store for tests, prototypes and single-process tools (nothing persists).

    With `outbox` (an `InMemoryOutboxRepository`), each append also queues its events there,
    atomically with the append.
    """

    backend = "memory"
    filters_partitions = True

    def __init__(
        self, *, registry: EventRegistry | None = None, outbox: OutboxSink | None = None
    ) -> None:
        self._codec = EventCodec(registry)
        self.outbox = outbox
        self._lock = threading.Lock()
        self._records: list[EventRecord] = []
        self._streams: dict[UUID, list[EventRecord]] = {}
        self._by_id: dict[UUID, EventRecord] = {}
        self._signals = AppendSignals()

    def listen(self) -> contextlib.AbstractAsyncContextManager[AppendSignal]:
        return self._signals.listen()

    async def _append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        validate_expected_version(expected_version)
        with self._lock:
            stream = self._streams.get(aggregate_id, [])
            current = stream[-1].aggregate_version if stream else 0
            known = [self._by_id[e.event_id] for e in events if e.event_id in self._by_id]
            if known:
                return replayed_result(events, aggregate_id, aggregate_type, known)
            check_expected_version(aggregate_id, expected_version, current)
            attached = attach_events(events, aggregate_id, aggregate_type, current + 1)
            payloads = [self._codec.encode(event) for event in attached]
            now = utc_now()
            new: list[EventRecord] = []
            for event, payload in zip(attached, payloads, strict=True):
                record = EventRecord(
                    position=Position(0, len(self._records) + len(new) + 1),
                    event_id=event.event_id,
                    event_type=event.event_type,
                    event_version=event.event_version,
                    aggregate_id=aggregate_id,
                    aggregate_type=aggregate_type,
                    aggregate_version=event.aggregate_version,
                    tenant_id=event.tenant_id,
                    occurred_at=event.occurred_at,
                    recorded_at=now,
                    payload=payload,
                )
                new.append(record)
            self._records.extend(new)
            self._streams.setdefault(aggregate_id, []).extend(new)
            self._by_id.update((record.event_id, record) for record in new)
            if self.outbox is not None:
                self.outbox.add_now(attached)
        if new:
            self._signals.signal_append()
        return AppendResult(
            aggregate_id=aggregate_id,
            new_version=current + len(attached),
            events=tuple(attached),
            positions=tuple(record.position for record in new),
        )

    def _decode(self, record: EventRecord) -> StoredEvent:
        return record_event(self._codec, record)

    async def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        with self._lock:
            stream = list(self._streams.get(aggregate_id, ()))
        last = options.to_version if options.to_version is not None else len(stream)
        selected = stream[max(options.from_version, 1) - 1 : max(last, 0)]
        if not options.forward:
            selected.reverse()
        yielded = 0
        for record in selected:
            if options.limit is not None and yielded >= options.limit:
                return
            if _matches(record, options):
                yielded += 1
                yield self._decode(record)

    def _feed(self, options: ReadOptions) -> Iterator[EventRecord]:
        """The records `read_all(options)` yields, undecoded."""
        with self._lock:
            records = self._records[:]
        after = options.after
        if after is not None:
            if options.forward:
                records = [r for r in records if r.position > after]
            else:
                records = [r for r in records if r.position < after]
        if not options.forward:
            records.reverse()
        yielded = 0
        for record in records:
            if options.limit is not None and yielded >= options.limit:
                return
            if _matches(record, options):
                yielded += 1
                yield record

    async def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        for record in self._feed(options or ReadOptions()):
            yield self._decode(record)

    async def count_events(self, options: ReadOptions | None = None) -> int:
        return sum(1 for _ in self._feed(options or ReadOptions()))

    async def current_position(self) -> Position:
        with self._lock:
            return self._records[-1].position if self._records else Position.START

    async def list_streams(
        self, *, aggregate_type: str | None = None, after: UUID | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """`StreamListing.list_streams` (sorts the stream ids on each call: memory is small)."""
        check_limit(limit)
        with self._lock:
            streams = [
                (aggregate_id, records[-1])
                for aggregate_id, records in self._streams.items()
                if (after is None or aggregate_id > after)
                and (aggregate_type is None or records[-1].aggregate_type == aggregate_type)
            ]
        streams.sort(key=lambda item: item[0])
        return [
            StreamInfo(aggregate_id, last.aggregate_type, last.aggregate_version, last.recorded_at)
            for aggregate_id, last in streams[:limit]
        ]

    async def get_stream_version(self, aggregate_id: UUID) -> int:
        stream = self._streams.get(aggregate_id)
        return stream[-1].aggregate_version if stream else 0

    async def event_exists(self, event_id: UUID) -> bool:
        return event_id in self._by_id

    async def get_event(self, event_id: UUID) -> StoredEvent:
        record = self._by_id.get(event_id)
        if record is None:
            raise EventNotFoundError(event_id)
        return self._decode(record)
