"""Where subscriptions keep their progress (`CheckpointRepository`) and the events their
handlers could not process (`DLQRepository`)."""

from __future__ import annotations

import traceback as traceback_module
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsource._internal.closing import AsyncClosing
from eventsource._internal.text import storable_text
from eventsource.events.serialization import EventCodec
from eventsource.protocols import DeadLetterStatus
from eventsource.repositories._guide import (
    CheckpointData,
    DLQEntry,
    DLQStats,
    GuideCheckpointMethods,
    GuideDLQMethods,
    LagMetrics,
    ProjectionFailureCount,
)
from eventsource.stores.interface import Position, StoredEvent

__all__ = [
    "Checkpoint",
    "CheckpointData",
    "CheckpointRepository",
    "DLQEntry",
    "DLQRepository",
    "DLQStats",
    "DeadLetter",
    "DeadLetterStatus",
    "LagMetrics",
    "ProjectionFailureCount",
    "describe_error",
]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far a named subscription (or projection) has processed the global feed."""

    name: str
    position: Position
    """The last position processed: resume after it."""
    event_id: UUID | None
    event_type: str | None
    events_processed: int
    """Events processed since the checkpoint was created (or last reset)."""
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event a subscription's handler failed on, with what went wrong."""

    id: UUID
    subscription: str
    event_id: UUID
    event_type: str
    position: Position
    payload: str
    """The event as JSON, so it can be read even if its class is gone; for an `undecodable`
    event, the stored payload text exactly as the store returned it (maybe not JSON at all)."""
    error: str
    """`ExceptionType: message` of the last failure."""
    traceback: str
    attempts: int
    status: DeadLetterStatus
    first_failed_at: datetime
    last_failed_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    undecodable: bool = False
    """The reader could not decode the stored row (unknown type, corrupt payload, failing
    upcaster): `payload` is the raw stored text."""
    event_version: int | None = None
    """The schema version the event was stored with (None on letters older than it)."""
    aggregate_id: UUID | None = None
    aggregate_type: str | None = None
    aggregate_version: int | None = None


def letter_payload(stored: StoredEvent) -> tuple[str | None, str | None]:
    """(JSON of the decoded event, raw stored text): exactly one is set; the raw text when the
    stored row cannot be decoded."""
    if stored.decode_error() is not None:
        return None, stored.payload
    return EventCodec.encode(stored.event), None


def describe_error(error: BaseException) -> tuple[str, str]:
    """(`Type: message`, formatted traceback) of an exception, as a dead letter keeps them:
    storable by every backend (NUL and lone surrogates replaced, see `storable_text`)."""
    text = f"{type(error).__qualname__}: {error}"
    trace = "".join(traceback_module.format_exception(type(error), error, error.__traceback__))
    return storable_text(text), storable_text(trace)


class CheckpointRepository(GuideCheckpointMethods, AsyncClosing, ABC):
    """Positions of named subscriptions. Every backend passes
    `eventsource.testing.CheckpointRepositoryContract`."""

    @abstractmethod
    async def get(self, name: str) -> Checkpoint | None:
        """The checkpoint of `name`, or None when it never saved one."""

    @abstractmethod
    async def save(
        self,
        name: str,
        position: Position,
        *,
        event_id: UUID | None = None,
        event_type: str | None = None,
        processed: int = 1,
    ) -> None:
        """Move `name` forward to `position`, adding `processed` to its count.

        A position at or before the saved one is ignored (a stale worker cannot move a
        checkpoint back); rewinding is `reset`.
        """

    @abstractmethod
    async def reset(self, name: str, position: Position | None = None) -> None:
        """Start `name` over: from `position`, or from the beginning when None."""

    @abstractmethod
    async def list(self) -> list[Checkpoint]:
        """Every checkpoint, by name."""


class DLQRepository(GuideDLQMethods, AsyncClosing, ABC):
    """Dead letters of subscriptions. Every backend passes
    `eventsource.testing.DLQRepositoryContract`."""

    @abstractmethod
    async def add(
        self, subscription: str, stored: StoredEvent, error: BaseException, attempts: int
    ) -> DeadLetter:
        """Record that `subscription` gave up on `stored` after `attempts` attempts.

        The same event failing again for the same subscription updates its dead letter
        (attempts added, error replaced, status FAILED) instead of adding another.
        """

    @abstractmethod
    async def get(self, dead_letter_id: UUID) -> DeadLetter | None: ...

    @abstractmethod
    async def list(
        self,
        subscription: str | None = None,
        *,
        status: DeadLetterStatus | None = DeadLetterStatus.FAILED,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Dead letters, oldest failure first (all statuses when `status` is None)."""

    @abstractmethod
    async def count(
        self, subscription: str | None = None, *, status: DeadLetterStatus | None = None
    ) -> int: ...

    @abstractmethod
    async def mark_retrying(self, dead_letter_id: UUID) -> bool:
        """FAILED -> RETRYING; False when it is not FAILED (someone else is retrying it)."""

    @abstractmethod
    async def resolve(self, dead_letter_id: UUID, *, resolved_by: str) -> bool:
        """-> RESOLVED; False when it was resolved already or does not exist."""
