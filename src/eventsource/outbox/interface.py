"""The transactional outbox and the consumer-side inbox.

Publishing after a commit can lose events (the process dies between the two) and publishing
before it can announce events that never happened. The outbox closes that gap: a store built
with `outbox=True` writes each appended event to an outbox table in the same transaction as
the append; `OutboxRelay` then publishes the pending rows to a bus and marks them published.
A relay that dies between the publish and the mark publishes the rows again, so consumers see
duplicates, never gaps; the inbox (`InboxRepository`, `InboxHandler`) drops those duplicates
per consumer, by event id.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from eventsource._internal.closing import AsyncClosing
from eventsource.events.base import DomainEvent

__all__ = [
    "InboxRepository",
    "OutboxBatch",
    "OutboxEntry",
    "OutboxRepository",
    "OutboxStats",
    "RecordedBatch",
]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One event waiting in the outbox: its identity, its stored JSON and its retry state."""

    id: int
    event_id: UUID
    event_type: str
    event_version: int
    aggregate_id: UUID
    aggregate_type: str
    aggregate_version: int
    payload: str
    created_at: datetime
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    """Rows not published yet (failing ones included)."""
    failing: int
    """Pending rows whose last publish failed."""
    published: int
    """Published rows not cleaned up yet."""
    oldest_pending: datetime | None


class OutboxBatch(ABC):
    """Rows claimed by one relay: nobody else publishes them until the batch ends.

    Ending the batch (leaving its `async with`) records what was marked. Leaving it by an
    exception, or dying inside it, marks nothing: the rows are claimed again later.
    """

    entries: Sequence[OutboxEntry]

    @abstractmethod
    async def published(self, entries: Sequence[OutboxEntry]) -> None:
        """Mark `entries` as published (recorded when the batch ends)."""

    @abstractmethod
    async def failed(self, entries: Sequence[OutboxEntry], error: str, retry_at: datetime) -> None:
        """Count a failed attempt for `entries`; neither they nor the later events of their
        aggregates are claimed again before `retry_at`."""


class RecordedBatch(OutboxBatch):
    """A batch that records the marks for its repository to write when the batch ends."""

    def __init__(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries = entries
        self.published_ids: list[int] = []
        self.failures: list[tuple[list[int], str, datetime]] = []

    async def published(self, entries: Sequence[OutboxEntry]) -> None:
        self.published_ids.extend(entry.id for entry in entries)

    async def failed(self, entries: Sequence[OutboxEntry], error: str, retry_at: datetime) -> None:
        self.failures.append(([entry.id for entry in entries], error, retry_at))


class OutboxRepository(AsyncClosing, ABC):
    """Storage of the outbox rows. Stores with `outbox=True` write them in the append's
    transaction; `add` is for events appended some other way."""

    @abstractmethod
    async def add(self, events: Sequence[DomainEvent]) -> None:
        """Queue stream-attached events for publishing, in the given order."""

    @abstractmethod
    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]:
        """Claim up to `limit` pending rows, oldest first, for one relay.

        A row is claimable when it is due (`failed` sets when) and no earlier pending row of
        its aggregate is delayed or claimed by another relay, so each aggregate's events are
        published in order even with several relays running.
        """

    @abstractmethod
    async def cleanup(self, older_than: timedelta) -> int:
        """Delete rows published more than `older_than` ago; returns how many."""

    @abstractmethod
    async def stats(self) -> OutboxStats: ...


class InboxRepository(AsyncClosing, ABC):
    """Which events each consumer has processed, so a redelivered event is recognised.

    `record` after a handler succeeded gives at-least-once handling with duplicates dropped
    (a crash between the handler and `record` can still repeat the handler once); a database
    inbox used inside the handler's own transaction (`PostgreSQLInboxRepository.using(conn)`)
    makes the effect exactly-once.
    """

    @abstractmethod
    async def contains(self, consumer: str, event_id: UUID) -> bool: ...

    @abstractmethod
    async def record(self, consumer: str, event_id: UUID) -> bool:
        """Note that `consumer` processed `event_id`; False if it was already noted."""

    @abstractmethod
    async def cleanup(self, older_than: timedelta) -> int:
        """Forget events recorded more than `older_than` ago (keep longer than any
        redelivery can take); returns how many."""
