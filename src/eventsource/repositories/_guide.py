"""The package guide's spellings of the checkpoint and dead-letter repositories.

The guide names checkpoints by event id (`update_checkpoint(name, event_id, event_type)`)
where this library keeps positions in the global feed: `update_checkpoint` looks the event up
in the store the repository reaches (`event_store`, or the events table beside a PostgreSQL
repository's own table) and saves that event's position, so the guide's form and `save` record
the same checkpoint. Everything here runs on the repository's own methods (`get`, `save`,
`add`, `list`, `resolve`): one implementation, two spellings.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsource._internal.clock import utc_now
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import ConfigurationError
from eventsource.protocols import DeadLetterStatus
from eventsource.serialization import EventSourceJSONEncoder
from eventsource.stores.interface import (
    EventStore,
    Position,
    ReadDirection,
    ReadOptions,
    StoredEvent,
)

if TYPE_CHECKING:
    from eventsource.repositories.interface import Checkpoint, DeadLetter

__all__ = [
    "CheckpointData",
    "DLQEntry",
    "DLQStats",
    "GuideCheckpointMethods",
    "GuideDLQMethods",
    "LagMetrics",
    "ProjectionFailureCount",
]

_List = list


@dataclass(frozen=True, slots=True)
class CheckpointData:
    """A checkpoint as the package guide describes it (`Checkpoint` is the full record)."""

    projection_name: str
    last_event_id: UUID | None
    last_event_type: str | None
    last_processed_at: datetime
    events_processed: int
    global_position: Position

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CheckpointData:
        return cls(
            checkpoint.name,
            checkpoint.event_id,
            checkpoint.event_type,
            checkpoint.updated_at,
            checkpoint.events_processed,
            checkpoint.position,
        )


@dataclass(frozen=True, slots=True)
class LagMetrics:
    """How far a projection is behind the store's feed, for the event types it handles."""

    projection_name: str
    last_event_id: UUID | None
    """The last event the projection processed."""
    latest_event_id: UUID | None
    """The newest event of the given types in the feed (None when there is none)."""
    lag_seconds: float
    """Time between the storing of the processed event and of the newest one (0 when
    caught up)."""
    events_behind: int
    """Events of the given types after the checkpoint (counted by the store, not read)."""
    events_processed: int
    last_processed_at: datetime


@dataclass(frozen=True, slots=True)
class DLQEntry:
    """A dead letter as the package guide describes it (`DeadLetter` is the full record)."""

    id: UUID
    event_id: UUID
    projection_name: str
    event_type: str
    event_data: dict[str, Any]
    """The event's JSON as a dict (empty when the stored payload is not a JSON object)."""
    error_message: str
    error_stacktrace: str
    retry_count: int
    first_failed_at: datetime
    last_failed_at: datetime
    status: str
    resolved_at: datetime | None
    resolved_by: str | None

    @classmethod
    def of(cls, letter: DeadLetter) -> DLQEntry:
        try:
            data = json.loads(letter.payload)
        except ValueError:
            data = None
        return cls(
            letter.id,
            letter.event_id,
            letter.subscription,
            letter.event_type,
            data if isinstance(data, dict) else {},
            letter.error,
            letter.traceback,
            letter.attempts,
            letter.first_failed_at,
            letter.last_failed_at,
            str(letter.status),
            letter.resolved_at,
            letter.resolved_by,
        )


@dataclass(frozen=True, slots=True)
class DLQStats:
    total_failed: int
    total_retrying: int
    total_resolved: int
    affected_projections: int
    """Projections with at least one FAILED letter."""
    oldest_failure: datetime | None
    """First failure of the oldest FAILED letter."""


@dataclass(frozen=True, slots=True)
class ProjectionFailureCount:
    projection_name: str
    failure_count: int
    """FAILED letters of the projection."""
    oldest_failure: datetime
    most_recent_failure: datetime


class _ReachesStore:
    event_store: EventStore | None = None
    """The store whose feed the guide's event-id methods look events up in."""

    async def _guide_store(self, what: str) -> EventStore:
        store = await self._reach_store()
        if store is None:
            raise ConfigurationError(
                f"{type(self).__name__}.{what} looks events up by id in the event store, and "
                "this repository reaches none: pass event_store=<your EventStore> when "
                "building it (or set repo.event_store), or use the position-based methods"
            )
        return store

    async def _reach_store(self) -> EventStore | None:
        return self.event_store


class GuideCheckpointMethods(_ReachesStore):
    @abstractmethod
    async def get(self, name: str) -> Checkpoint | None: ...

    @abstractmethod
    async def save(
        self,
        name: str,
        position: Position,
        *,
        event_id: UUID | None = None,
        event_type: str | None = None,
        processed: int = 1,
    ) -> None: ...

    @abstractmethod
    async def list(self) -> _List[Checkpoint]: ...

    async def get_checkpoint(self, name: str) -> UUID | None:
        """The id of the last event `name` processed (None before the first). `get` is the
        preferred form: it returns the position to resume after."""
        checkpoint = await self.get(name)
        return checkpoint.event_id if checkpoint is not None else None

    async def update_checkpoint(self, name: str, event_id: UUID, event_type: str) -> None:
        """Record that `name` processed the stored event `event_id`: saves that event's
        position (looked up in the store; `EventNotFoundError` when it is not stored).
        Like `save`, a checkpoint never moves back to an earlier event."""
        stored = await (await self._guide_store("update_checkpoint")).get_event(event_id)
        await self.save(name, stored.position, event_id=event_id, event_type=event_type)

    async def get_all_checkpoints(self) -> _List[CheckpointData]:
        return [CheckpointData.of(checkpoint) for checkpoint in await self.list()]

    async def get_lag_metrics(
        self, name: str, event_types: _List[str] | None = None
    ) -> LagMetrics | None:
        """Lag of `name` behind the store's feed, counting only `event_types` (all when
        None); None when `name` has no checkpoint."""
        checkpoint = await self.get(name)
        if checkpoint is None:
            return None
        store = await self._guide_store("get_lag_metrics")
        types = frozenset(event_types) if event_types is not None else None
        newest: StoredEvent | None = None
        async for stored in store.read_all(
            ReadOptions(direction=ReadDirection.BACKWARD, limit=1, event_types=types)
        ):
            newest = stored
        # One count query (`count_events`), never the events behind pulled into Python.
        behind = await store.count_events(ReadOptions(after=checkpoint.position, event_types=types))
        lag = 0.0
        if behind and newest is not None:
            processed_at = checkpoint.updated_at
            if checkpoint.event_id is not None and await store.event_exists(checkpoint.event_id):
                processed_at = (await store.get_event(checkpoint.event_id)).recorded_at
            lag = max(0.0, (newest.recorded_at - processed_at).total_seconds())
        return LagMetrics(
            projection_name=name,
            last_event_id=checkpoint.event_id,
            latest_event_id=newest.event_id if newest is not None else None,
            lag_seconds=lag,
            events_behind=behind,
            events_processed=checkpoint.events_processed,
            last_processed_at=checkpoint.updated_at,
        )


class GuideDLQMethods(_ReachesStore):
    @abstractmethod
    async def add(
        self, subscription: str, stored: StoredEvent, error: BaseException, attempts: int
    ) -> DeadLetter: ...

    @abstractmethod
    async def list(
        self,
        subscription: str | None = None,
        *,
        status: DeadLetterStatus | None = DeadLetterStatus.FAILED,
        limit: int = 100,
    ) -> _List[DeadLetter]: ...

    @abstractmethod
    async def count(
        self, subscription: str | None = None, *, status: DeadLetterStatus | None = None
    ) -> int: ...

    @abstractmethod
    async def resolve(self, dead_letter_id: UUID, *, resolved_by: str) -> bool: ...

    async def add_failed_event(
        self,
        event_id: UUID,
        projection_name: str,
        event_type: str,
        event_data: dict[str, Any],
        error: BaseException,
        retry_count: int = 1,
    ) -> DLQEntry:
        """Record that `projection_name` gave up on an event (`add` is the preferred form).

        The letter takes the event's position from the store when the repository reaches
        one that holds it; otherwise it keeps `event_data` as its payload at `Position.START`.
        """
        store = await self._reach_store()
        if store is not None and await store.event_exists(event_id):
            stored = await store.get_event(event_id)
        else:
            payload = json.dumps(event_data, cls=EventSourceJSONEncoder)
            stored = StoredEvent.from_row(
                EventCodec(),
                Position.START,
                utc_now(),
                event_id,
                event_type,
                int(event_data.get("event_version", 1)),
                _uuid_or_none(event_data.get("aggregate_id")),
                _text_or_none(event_data.get("aggregate_type")),
                int(event_data.get("aggregate_version", 0)),
                payload,
            )
        return DLQEntry.of(await self.add(projection_name, stored, error, retry_count))

    async def get_failed_events(
        self,
        projection_name: str | None = None,
        status: DeadLetterStatus | str | None = DeadLetterStatus.FAILED,
        limit: int = 100,
    ) -> _List[DLQEntry]:
        wanted = DeadLetterStatus(status) if status is not None else None
        letters = await self.list(projection_name, status=wanted, limit=limit)
        return [DLQEntry.of(letter) for letter in letters]

    async def mark_resolved(self, dlq_id: UUID, resolved_by: str) -> bool:
        """`resolve`: False when the letter was resolved already or does not exist."""
        return await self.resolve(dlq_id, resolved_by=resolved_by)

    async def get_projection_failure_counts(self) -> _List[ProjectionFailureCount]:
        """FAILED letters per projection, by projection name."""
        total = await self.count(status=DeadLetterStatus.FAILED)
        by_name: dict[str, _List[DeadLetter]] = {}
        for letter in await self.list(status=DeadLetterStatus.FAILED, limit=max(total, 1)):
            by_name.setdefault(letter.subscription, []).append(letter)
        return [
            ProjectionFailureCount(
                name,
                len(letters),
                min(letter.first_failed_at for letter in letters),
                max(letter.last_failed_at for letter in letters),
            )
            for name, letters in sorted(by_name.items())
        ]

    async def get_failure_stats(self) -> DLQStats:
        counts = await self.get_projection_failure_counts()
        return DLQStats(
            total_failed=await self.count(status=DeadLetterStatus.FAILED),
            total_retrying=await self.count(status=DeadLetterStatus.RETRYING),
            total_resolved=await self.count(status=DeadLetterStatus.RESOLVED),
            affected_projections=len(counts),
            oldest_failure=min((c.oldest_failure for c in counts), default=None),
        )


def _uuid_or_none(value: object) -> UUID | None:
    try:
        return UUID(str(value)) if value is not None else None
    except ValueError:
        return None


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
