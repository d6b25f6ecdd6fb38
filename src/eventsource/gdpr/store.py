"""`EncryptedEventStore`: an event store whose personal data is sealed at rest.

It wraps any `EventStore`. Appends seal personal fields first (`PersonalDataVault.seal`), so
the wrapped store, its outbox and the bus it publishes to only ever see ciphertext; reads
open them again in pages (one key lookup per page). Events of classes without personal fields
pass straight through: they are not even decoded by the wrapper.

Give the wrapper to the code that needs plain values (an `AggregateRepository`); give the
wrapped store to subscriptions and wrap their projections in `OpenedProjection`, so dead
letters keep the sealed form. `forget(subject)` and `export(subject)` are the data subject's
rights: see docs/gdpr.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry, default_registry
from eventsource.gdpr._plan import personal_fields
from eventsource.gdpr.values import Sealed
from eventsource.gdpr.vault import PersonalDataVault
from eventsource.snapshots.interface import SnapshotStore
from eventsource.stores.interface import (
    DEFAULT_BATCH_SIZE,
    AppendResult,
    AppendSignal,
    EventStore,
    Position,
    ReadOptions,
    StoredEvent,
)

__all__ = ["EncryptedEventStore", "ForgetReport", "SubjectExport"]


@dataclass(frozen=True, slots=True)
class ForgetReport:
    """What `EncryptedEventStore.forget` did."""

    subject: str
    key_deleted: bool
    """False when the subject had no key (never seen, or forgotten before)."""
    aggregate_ids: frozenset[UUID]
    """The streams holding events with the subject's personal data."""
    snapshots_deleted: int


@dataclass(frozen=True, slots=True)
class SubjectExport:
    """Everything the store keeps about a subject: its events, opened (`export`)."""

    subject: str
    events: list[DomainEvent] = field(default_factory=list)
    """Every event carrying the subject's personal data, in global order, opened."""

    def personal_data(self) -> list[dict[str, Any]]:
        """One entry per personal value (None values left out): event id, type, aggregate
        id, time, field and value."""
        rows = []
        for event in self.events:
            for f in personal_fields(type(event)):
                if f.subject_of(event) == self.subject and getattr(event, f.name) is not None:
                    rows.append(
                        {
                            "event_id": event.event_id,
                            "event_type": event.event_type,
                            "aggregate_id": event.aggregate_id,
                            "occurred_at": event.occurred_at,
                            "field": f.name,
                            "value": getattr(event, f.name),
                        }
                    )
        return rows


class EncryptedEventStore(EventStore):
    """`inner` with the personal fields of its events sealed by `vault`.

    Closing it closes neither `inner` nor the vault's key store (their owner closes them).
    """

    enable_tracing = False  # the wrapped store traces its own appends

    def __init__(
        self,
        inner: EventStore,
        vault: PersonalDataVault,
        *,
        registry: EventRegistry | None = None,
    ) -> None:
        self.inner = inner
        self.vault = vault
        self.registry = registry if registry is not None else default_registry
        self.filters_partitions = inner.filters_partitions  # type: ignore[misc]
        self._personal: dict[str, bool] = {}
        self._generation = -1

    async def _append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        sealed = await self.vault.seal(events)
        return await self.inner.append_events(
            aggregate_id, aggregate_type, sealed, expected_version
        )

    def _has_personal(self, event_type: str) -> bool:
        if self._generation != self.registry.generation:
            self._personal.clear()
            self._generation = self.registry.generation
        known = self._personal.get(event_type)
        if known is None:
            cls = self.registry.get_or_none(event_type)
            known = self._personal[event_type] = cls is not None and bool(personal_fields(cls))
        return known

    async def _opened(self, page: list[StoredEvent]) -> list[StoredEvent]:
        """`page` with the events of personal classes opened (others untouched, undecoded).
        A row that cannot be decoded stays as it is: reading its `event` raises its typed
        error where it stands, as without the wrapper."""
        indexes = [
            i
            for i, stored in enumerate(page)
            if self._has_personal(stored.event_type) and stored.decode_error() is None
        ]
        if not indexes:
            return page
        opened = await self.vault.open([page[i].event for i in indexes])
        for i, event in zip(indexes, opened, strict=True):
            stored = page[i]
            page[i] = StoredEvent(event, stored.position, stored.recorded_at)
        return page

    async def _pages(
        self, source: AsyncIterator[StoredEvent], options: ReadOptions | None
    ) -> AsyncIterator[StoredEvent]:
        size = options.batch_size if options is not None else DEFAULT_BATCH_SIZE
        page: list[StoredEvent] = []
        async for stored in source:
            page.append(stored)
            if len(page) >= size:
                for item in await self._opened(page):
                    yield item
                page = []
        for item in await self._opened(page):
            yield item

    def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        return self._pages(self.inner.read_stream(aggregate_id, options), options)

    def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        return self._pages(self.inner.read_all(options), options)

    async def count_events(self, options: ReadOptions | None = None) -> int:
        return await self.inner.count_events(options)

    async def current_position(self) -> Position:
        return await self.inner.current_position()

    async def get_stream_version(self, aggregate_id: UUID) -> int:
        return await self.inner.get_stream_version(aggregate_id)

    async def event_exists(self, event_id: UUID) -> bool:
        return await self.inner.event_exists(event_id)

    async def load_envelope(self, stored: StoredEvent) -> None:
        await self.inner.load_envelope(stored)

    async def get_event(self, event_id: UUID) -> StoredEvent:
        return (await self._opened([await self.inner.get_event(event_id)]))[0]

    def listen(self) -> contextlib.AbstractAsyncContextManager[AppendSignal]:
        return self.inner.listen()

    # -- the data subject's rights --------------------------------------------------------

    async def _subject_events(self, subject: str) -> list[DomainEvent]:
        """The sealed events of `inner` carrying personal data of `subject`."""
        types = [name for name in self.registry.list_types() if self._has_personal(name)]
        if not types:
            return []
        found = []
        async for stored in self.inner.read_all(ReadOptions(event_types=types)):
            event = stored.event
            for f in personal_fields(type(event)):
                if f.subject_of(event) == subject and isinstance(event.__dict__[f.name], Sealed):
                    found.append(event)
                    break
        return found

    async def export(self, subject: str) -> SubjectExport:
        """Every event holding personal data of `subject`, opened (in global order). Events
        of a forgotten subject read with erased markers."""
        events = await self._subject_events(subject)
        return SubjectExport(subject, list(await self.vault.open(events)))

    async def forget(self, subject: str, *, snapshots: SnapshotStore | None = None) -> ForgetReport:
        """Forget `subject`: delete its key, then the snapshots of every stream holding its
        personal data (aggregate state is not sealed, so a snapshot could keep it; the next
        load rebuilds from the events, reading erased markers). From then on its
        personal fields read as erased everywhere: events, rebuilt read models, dead letters,
        outbox rows and bus messages (which only ever held ciphertext). Read models that
        copied the plain values must be rebuilt (or cleaned) by their owner."""
        aggregate_ids = frozenset(e.aggregate_id for e in await self._subject_events(subject))
        # the key first: a snapshot saved meanwhile by this process holds erased markers
        key_deleted = await self.vault.forget_key(subject)
        deleted = 0
        if snapshots is not None:
            for aggregate_id in sorted(aggregate_ids):
                deleted += await snapshots.delete(aggregate_id)
        return ForgetReport(subject, key_deleted, aggregate_ids, deleted)
