"""In-memory checkpoint and dead-letter repositories: for tests and single-process tools."""

from __future__ import annotations

import dataclasses
from uuid import UUID

from eventsource._internal.clock import utc_now
from eventsource._internal.ids import uuid7
from eventsource.repositories.interface import (
    Checkpoint,
    CheckpointRepository,
    DeadLetter,
    DeadLetterStatus,
    DLQRepository,
    describe_error,
    letter_payload,
)
from eventsource.stores.interface import EventStore, Position, StoredEvent

__all__ = ["InMemoryCheckpointRepository", "InMemoryDLQRepository"]


class InMemoryCheckpointRepository(CheckpointRepository):
    """`event_store`: the store the guide's event-id methods (`update_checkpoint`,
    `get_lag_metrics`) look events up in."""

    def __init__(self, event_store: EventStore | None = None) -> None:
        self._checkpoints: dict[str, Checkpoint] = {}
        self.event_store = event_store

    async def get(self, name: str) -> Checkpoint | None:
        return self._checkpoints.get(name)

    async def save(
        self,
        name: str,
        position: Position,
        *,
        event_id: UUID | None = None,
        event_type: str | None = None,
        processed: int = 1,
    ) -> None:
        kept = self._checkpoints.get(name)
        if kept is not None and position <= kept.position:
            return
        self._checkpoints[name] = Checkpoint(
            name,
            position,
            event_id,
            event_type,
            (kept.events_processed if kept else 0) + processed,
            utc_now(),
        )

    async def reset(self, name: str, position: Position | None = None) -> None:
        if position is None:
            self._checkpoints.pop(name, None)
        else:
            self._checkpoints[name] = Checkpoint(name, position, None, None, 0, utc_now())

    async def list(self) -> list[Checkpoint]:
        return [self._checkpoints[name] for name in sorted(self._checkpoints)]


class InMemoryDLQRepository(DLQRepository):
    """`event_store`: where `add_failed_event` looks up the failed event's position."""

    def __init__(self, event_store: EventStore | None = None) -> None:
        self._letters: dict[UUID, DeadLetter] = {}
        self.event_store = event_store

    async def add(
        self, subscription: str, stored: StoredEvent, error: BaseException, attempts: int
    ) -> DeadLetter:
        text, trace = describe_error(error)
        encoded, raw = letter_payload(stored)
        undecodable = raw is not None
        payload = raw if raw is not None else encoded
        assert payload is not None
        now = utc_now()
        for letter in self._letters.values():
            if letter.subscription == subscription and letter.event_id == stored.event_id:
                updated = dataclasses.replace(
                    letter,
                    payload=payload,
                    undecodable=undecodable,
                    event_version=stored.event_version,
                    aggregate_id=stored.aggregate_id,
                    aggregate_type=stored.aggregate_type,
                    aggregate_version=stored.version,
                    error=text,
                    traceback=trace,
                    attempts=letter.attempts + attempts,
                    status=DeadLetterStatus.FAILED,
                    last_failed_at=now,
                    resolved_at=None,
                    resolved_by=None,
                )
                self._letters[letter.id] = updated
                return updated
        letter = DeadLetter(
            id=uuid7(),
            subscription=subscription,
            event_id=stored.event_id,
            event_type=stored.event_type,
            position=stored.position,
            payload=payload,
            error=text,
            traceback=trace,
            attempts=attempts,
            status=DeadLetterStatus.FAILED,
            first_failed_at=now,
            last_failed_at=now,
            undecodable=undecodable,
            event_version=stored.event_version,
            aggregate_id=stored.aggregate_id,
            aggregate_type=stored.aggregate_type,
            aggregate_version=stored.version,
        )
        self._letters[letter.id] = letter
        return letter

    async def get(self, dead_letter_id: UUID) -> DeadLetter | None:
        return self._letters.get(dead_letter_id)

    async def list(
        self,
        subscription: str | None = None,
        *,
        status: DeadLetterStatus | None = DeadLetterStatus.FAILED,
        limit: int = 100,
    ) -> list[DeadLetter]:
        found = [
            letter
            for letter in self._letters.values()
            if (subscription is None or letter.subscription == subscription)
            and (status is None or letter.status == status)
        ]
        found.sort(key=lambda letter: (letter.first_failed_at, letter.id))
        return found[:limit]

    async def count(
        self, subscription: str | None = None, *, status: DeadLetterStatus | None = None
    ) -> int:
        return len(await self.list(subscription, status=status, limit=len(self._letters) + 1))

    async def mark_retrying(self, dead_letter_id: UUID) -> bool:
        letter = self._letters.get(dead_letter_id)
        if letter is None or letter.status is not DeadLetterStatus.FAILED:
            return False
        self._letters[dead_letter_id] = dataclasses.replace(
            letter, status=DeadLetterStatus.RETRYING
        )
        return True

    async def resolve(self, dead_letter_id: UUID, *, resolved_by: str) -> bool:
        letter = self._letters.get(dead_letter_id)
        if letter is None or letter.status is DeadLetterStatus.RESOLVED:
            return False
        self._letters[dead_letter_id] = dataclasses.replace(
            letter, status=DeadLetterStatus.RESOLVED, resolved_at=utc_now(), resolved_by=resolved_by
        )
        return True
