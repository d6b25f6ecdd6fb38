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
    parked_at: datetime | None = None
    """When the relay gave up on the row (see `OutboxRepository.list_parked`); None if not."""


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    """Rows not published yet and not parked (failing ones included)."""
    failing: int
    """Pending rows whose last publish failed."""
    published: int
    """Published rows not cleaned up yet."""
    oldest_pending: datetime | None
    parked: int = 0
    """Rows the relay gave up on; each holds back the later rows of its aggregate until an
    operator retries or discards it."""
    leased: int = 0
    """Unpublished rows a relay holds under a lease that has not expired (being published)."""
    relays: int = 0
    """Live leases: the batches relays are publishing now (one per relay at a time)."""


def storable_error(error: str, limit: int = 2000) -> str:
    """`error` as text every backend can store: NUL characters (which PostgreSQL refuses in
    text) and unpaired surrogates are escaped, and the text is cut to `limit` characters."""
    text = error.replace("\x00", "\\x00")
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text[:limit]


class OutboxBatch(ABC):
    """Rows leased by one relay: nobody else claims them until the batch ends or the lease
    expires.

    Ending the batch (leaving its `async with`) records what was marked, in one short
    transaction whose statements apply only while this relay still holds the lease, and
    frees the rows it did not mark. Leaving it by an exception marks nothing and frees the
    rows; dying inside it leaves the lease to expire. Either way the rows are claimed again.
    """

    entries: Sequence[OutboxEntry]

    @abstractmethod
    async def published(self, entries: Sequence[OutboxEntry]) -> None:
        """Mark `entries` as published (recorded when the batch ends)."""

    @abstractmethod
    async def failed(self, entries: Sequence[OutboxEntry], error: str, retry_at: datetime) -> None:
        """Count a failed attempt for `entries`; neither they nor the later events of their
        aggregates are claimed again before `retry_at`."""

    @abstractmethod
    async def parked(self, entries: Sequence[OutboxEntry], error: str) -> None:
        """Count a failed attempt for `entries` and park them: they and the later events of
        their aggregates are not claimed again until `OutboxRepository.retry_parked` (or
        `discard_parked`) releases them."""


class RecordedBatch(OutboxBatch):
    """A batch that records the marks for its repository to write when the batch ends."""

    def __init__(self, entries: Sequence[OutboxEntry]) -> None:
        self.entries = entries
        self.published_ids: list[int] = []
        self.failures: list[tuple[list[int], str, datetime]] = []
        self.parks: list[tuple[list[int], str]] = []

    async def published(self, entries: Sequence[OutboxEntry]) -> None:
        self.published_ids.extend(entry.id for entry in entries)

    async def failed(self, entries: Sequence[OutboxEntry], error: str, retry_at: datetime) -> None:
        self.failures.append(([entry.id for entry in entries], storable_error(error), retry_at))

    async def parked(self, entries: Sequence[OutboxEntry], error: str) -> None:
        self.parks.append(([entry.id for entry in entries], storable_error(error)))


class OutboxRepository(AsyncClosing, ABC):
    """Storage of the outbox rows. Stores with `outbox=True` write them in the append's
    transaction; `add` is for events appended some other way."""

    @abstractmethod
    async def add(self, events: Sequence[DomainEvent]) -> None:
        """Queue stream-attached events for publishing, in the given order."""

    @abstractmethod
    async def add_event(self, event: DomainEvent) -> int:
        """Queue one stream-attached event (the package guide's form of `add`); its row id."""

    async def get_pending_events(self, limit: int = 100) -> list[OutboxEntry]:
        """Up to `limit` rows a relay could claim now, oldest first (the package guide's
        form). It takes no lease: `claim` is the preferred form for a relay, since two
        workers reading pending rows this way may publish the same row twice."""
        async with self.claim(limit) as batch:
            return list(batch.entries)

    @abstractmethod
    async def mark_published(self, entry_id: int) -> bool:
        """Mark one row published, whoever holds it (the package guide's form; a batch's
        `published` is preferred); False if no such row is pending."""

    @abstractmethod
    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]:
        """Lease up to `limit` pending rows, oldest first, to one relay.

        The lease is taken in one short transaction and no transaction stays open while the
        relay publishes. A row is claimable when it is due (`failed` sets when), not parked,
        not leased by another relay (or its lease expired), and no earlier unpublished row of
        its aggregate is leased, delayed or parked, so each aggregate's events are published
        in order even with several relays running.
        """

    @abstractmethod
    async def cleanup(self, older_than: timedelta) -> int:
        """Delete rows published more than `older_than` ago; returns how many."""

    @abstractmethod
    async def stats(self) -> OutboxStats: ...

    @abstractmethod
    async def list_parked(self, limit: int = 100) -> list[OutboxEntry]:
        """The parked rows (oldest first), with their attempts and last error."""

    @abstractmethod
    async def retry_parked(self, entry_id: int) -> bool:
        """Put a parked row back to pending with its attempts reset, so the relay tries it
        (and then the later rows of its aggregate) again; False if no such row is parked."""

    @abstractmethod
    async def discard_parked(self, entry_id: int) -> bool:
        """Delete a parked row without publishing it, releasing the later rows of its
        aggregate; False if no such row is parked."""


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
