"""Durable timers: when to wake a saga up (to resume it, at its deadline, after a delay or a
backoff), kept in a table so they fire after a restart, by whichever engine process is up.

A timer is keyed by (saga id, name): scheduling it again replaces its due time. Firing is a
lease: `claim_due` stamps due timers with a token and `claimed_until` (PostgreSQL: `FOR
UPDATE SKIP LOCKED`, so concurrent claims never take the same row), the engine drives the
saga, then `complete` deletes the timer, unless it was scheduled again meanwhile (its
`generation` moved on): then only the claim is dropped and it fires again. A process that
dies leaves its claim to expire, and another process claims the timer. A timer may so fire
more than once (a lease that expired under a slow engine): a timer only wakes a saga up, and
what the saga does is decided by its own recorded state under its lock, never by the timer.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from eventsource._internal.closing import AsyncClosing

__all__ = ["ClaimedTimer", "InMemoryTimerStore", "Timer", "TimerStore"]


@dataclass(frozen=True, slots=True)
class Timer:
    saga_id: UUID
    name: str
    due_at: datetime
    generation: int


@dataclass(frozen=True, slots=True)
class ClaimedTimer(Timer):
    token: UUID
    """The claim's token: `complete` and `release` act only while the claim is this one."""


class TimerStore(AsyncClosing, ABC):
    """Durable saga timers; every backend passes `eventsource.testing.TimerStoreContract`.

    Times are given by the caller (the engine's clock), never read from the database's
    clock, so a test clock moves them and processes on one database agree.
    """

    @abstractmethod
    async def schedule(self, saga_id: UUID, name: str, due_at: datetime) -> None:
        """Set the timer `name` of `saga_id` to fire at `due_at` (replacing its due time if it
        exists, and moving its generation on, so a claim of the older schedule does not delete
        it)."""

    @abstractmethod
    async def cancel(self, saga_id: UUID, name: str) -> bool:
        """Delete the timer; True if there was one."""

    @abstractmethod
    async def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> list[ClaimedTimer]:
        """Claim up to `limit` timers due at `now` and not claimed (or whose claim expired),
        earliest first, until `now + lease`. Concurrent claims never return one timer twice
        while its lease runs."""

    @abstractmethod
    async def complete(self, timer: ClaimedTimer) -> bool:
        """Delete the fired timer if it was not scheduled again since it was claimed (True);
        otherwise drop the claim so that it fires at its new time (False)."""

    @abstractmethod
    async def release(self, timer: ClaimedTimer, due_at: datetime) -> None:
        """Give a claim back unfired: the timer fires at `due_at` (if not scheduled again)."""

    @abstractmethod
    async def pending(self, saga_id: UUID | None = None) -> list[Timer]:
        """The timers (of one saga, or all), by due time: for inspection and tests."""

    @abstractmethod
    async def next_due(self) -> datetime | None:
        """The earliest time at which a timer can be claimed: its due time, or the end of its
        claim while claimed (None: no timers)."""

    async def create_schema(self) -> list[int] | None:
        """Create the table if the backend has one (SQLite and memory need nothing); the
        numbers of the migrations applied where the backend has numbered migrations."""
        return None


@dataclass(slots=True)
class _Row:
    due_at: datetime
    generation: int
    claimed_by: UUID | None = None
    claimed_until: datetime | None = None


class InMemoryTimerStore(TimerStore):
    """Timers in a dict: for tests and single-process applications (lost on exit)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[UUID, str], _Row] = {}
        self._lock = asyncio.Lock()

    async def schedule(self, saga_id: UUID, name: str, due_at: datetime) -> None:
        row = self._rows.get((saga_id, name))
        if row is None:
            self._rows[(saga_id, name)] = _Row(due_at, 1)
        else:
            row.due_at, row.generation = due_at, row.generation + 1

    async def cancel(self, saga_id: UUID, name: str) -> bool:
        return self._rows.pop((saga_id, name), None) is not None

    async def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> list[ClaimedTimer]:
        token = uuid4()
        due = sorted(
            (
                (row.due_at, key)
                for key, row in self._rows.items()
                if row.due_at <= now and (row.claimed_until is None or row.claimed_until <= now)
            ),
            key=lambda item: item[0],
        )[:limit]
        claimed = []
        for _, key in due:
            row = self._rows[key]
            row.claimed_by, row.claimed_until = token, now + lease
            claimed.append(ClaimedTimer(key[0], key[1], row.due_at, row.generation, token))
        return claimed

    async def complete(self, timer: ClaimedTimer) -> bool:
        key = (timer.saga_id, timer.name)
        row = self._rows.get(key)
        if row is None:
            return False
        if row.generation == timer.generation:
            del self._rows[key]
            return True
        if row.claimed_by == timer.token:
            row.claimed_by = row.claimed_until = None
        return False

    async def release(self, timer: ClaimedTimer, due_at: datetime) -> None:
        row = self._rows.get((timer.saga_id, timer.name))
        if row is not None and row.claimed_by == timer.token:
            row.claimed_by = row.claimed_until = None
            if row.generation == timer.generation:
                row.due_at = due_at

    async def pending(self, saga_id: UUID | None = None) -> list[Timer]:
        timers = [
            Timer(key[0], key[1], row.due_at, row.generation)
            for key, row in self._rows.items()
            if saga_id is None or key[0] == saga_id
        ]
        return sorted(timers, key=lambda timer: (timer.due_at, timer.name))

    async def next_due(self) -> datetime | None:
        return min(
            (max(row.due_at, row.claimed_until or row.due_at) for row in self._rows.values()),
            default=None,
        )
