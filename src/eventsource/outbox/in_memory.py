"""In-memory outbox and inbox: the same contract as the database ones, for tests and for an
`InMemoryEventStore(outbox=...)`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from eventsource._internal.clock import utc_now
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec
from eventsource.outbox.interface import (
    InboxRepository,
    OutboxBatch,
    OutboxEntry,
    OutboxRepository,
    OutboxStats,
    storable_error,
)

__all__ = ["InMemoryInboxRepository", "InMemoryOutboxRepository"]


@dataclass
class _Row:
    entry: OutboxEntry
    due: datetime
    published_at: datetime | None = None
    claimed: bool = False


class _Batch(OutboxBatch):
    def __init__(self, rows: list[_Row]) -> None:
        self._rows = {row.entry.id: row for row in rows}
        self.entries = [row.entry for row in rows]
        self._published: set[int] = set()
        self._failed: dict[int, tuple[str, datetime]] = {}
        self._parked: dict[int, str] = {}

    async def published(self, entries: Sequence[OutboxEntry]) -> None:
        self._published.update(entry.id for entry in entries)

    async def failed(self, entries: Sequence[OutboxEntry], error: str, retry_at: datetime) -> None:
        for entry in entries:
            self._failed[entry.id] = (storable_error(error), retry_at)

    async def parked(self, entries: Sequence[OutboxEntry], error: str) -> None:
        for entry in entries:
            self._parked[entry.id] = storable_error(error)

    def commit(self) -> None:
        now = utc_now()
        for entry_id in self._published:
            self._rows[entry_id].published_at = now
        for entry_id, (error, retry_at) in self._failed.items():
            row = self._rows[entry_id]
            row.entry = replace(row.entry, attempts=row.entry.attempts + 1, last_error=error)
            row.due = retry_at
        for entry_id, error in self._parked.items():
            row = self._rows[entry_id]
            row.entry = replace(
                row.entry, attempts=row.entry.attempts + 1, last_error=error, parked_at=now
            )

    def release(self) -> None:
        for row in self._rows.values():
            row.claimed = False


class InMemoryOutboxRepository(OutboxRepository):
    """Outbox rows in a list; pass it to `InMemoryEventStore(outbox=...)`."""

    def __init__(self) -> None:
        self._rows: list[_Row] = []
        self._next_id = 1
        self._batches = 0
        """Claimed batches not ended yet (the live leases)."""

    async def add(self, events: Sequence[DomainEvent]) -> None:
        self.add_now(events)

    async def add_event(self, event: DomainEvent) -> int:
        self.add_now([event])
        return self._next_id - 1

    async def mark_published(self, entry_id: int) -> bool:
        for row in self._rows:
            if row.entry.id == entry_id and row.published_at is None:
                row.published_at = utc_now()
                row.claimed = False
                return True
        return False

    def add_now(self, events: Sequence[DomainEvent]) -> None:
        """`add` without awaiting: what the in-memory store calls inside its append lock."""
        now = utc_now()
        for event in events:
            entry = OutboxEntry(
                id=self._next_id,
                event_id=event.event_id,
                event_type=event.event_type,
                event_version=event.event_version,
                aggregate_id=event.aggregate_id,
                aggregate_type=event.aggregate_type,
                aggregate_version=event.aggregate_version,
                payload=EventCodec.encode(event),
                created_at=now,
                attempts=0,
                last_error=None,
            )
            self._next_id += 1
            self._rows.append(_Row(entry, now))

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        now = utc_now()
        blocked: set[UUID] = set()
        taken: list[_Row] = []
        for row in self._rows:
            if row.published_at is not None:
                continue
            aggregate = row.entry.aggregate_id
            if aggregate in blocked:
                continue
            if row.claimed or row.due > now or row.entry.parked_at is not None:
                blocked.add(aggregate)  # later events of this aggregate must wait for it
                continue
            if len(taken) < limit:
                row.claimed = True
                taken.append(row)
        batch = _Batch(taken)
        self._batches += bool(taken)
        try:
            yield batch
            batch.commit()
        finally:
            self._batches -= bool(taken)
            batch.release()

    async def cleanup(self, older_than: timedelta) -> int:
        cutoff = utc_now() - older_than
        kept = [r for r in self._rows if r.published_at is None or r.published_at >= cutoff]
        removed = len(self._rows) - len(kept)
        self._rows = kept
        return removed

    async def stats(self) -> OutboxStats:
        unpublished = [r for r in self._rows if r.published_at is None]
        pending = [r for r in unpublished if r.entry.parked_at is None]
        return OutboxStats(
            pending=len(pending),
            failing=sum(1 for r in pending if r.entry.attempts),
            published=len(self._rows) - len(unpublished),
            oldest_pending=min((r.entry.created_at for r in pending), default=None),
            parked=len(unpublished) - len(pending),
            leased=sum(1 for r in unpublished if r.claimed),
            relays=self._batches,
        )

    def _parked_row(self, entry_id: int) -> _Row | None:
        for row in self._rows:
            if row.entry.id == entry_id and row.entry.parked_at is not None:
                return row
        return None

    async def list_parked(self, limit: int = 100) -> list[OutboxEntry]:
        return [r.entry for r in self._rows if r.entry.parked_at is not None][:limit]

    async def retry_parked(self, entry_id: int) -> bool:
        row = self._parked_row(entry_id)
        if row is None:
            return False
        row.entry = replace(row.entry, attempts=0, parked_at=None)
        row.due = utc_now()
        return True

    async def discard_parked(self, entry_id: int) -> bool:
        row = self._parked_row(entry_id)
        if row is None:
            return False
        self._rows.remove(row)
        return True


class InMemoryInboxRepository(InboxRepository):
    def __init__(self) -> None:
        self._seen: dict[tuple[str, UUID], datetime] = {}

    async def contains(self, consumer: str, event_id: UUID) -> bool:
        return (consumer, event_id) in self._seen

    async def record(self, consumer: str, event_id: UUID) -> bool:
        if (consumer, event_id) in self._seen:
            return False
        self._seen[(consumer, event_id)] = utc_now()
        return True

    async def cleanup(self, older_than: timedelta) -> int:
        cutoff = utc_now() - older_than
        old = [key for key, at in self._seen.items() if at < cutoff]
        for key in old:
            del self._seen[key]
        return len(old)
