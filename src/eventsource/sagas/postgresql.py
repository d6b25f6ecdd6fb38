"""`PostgreSQLTimerStore`: saga timers in `{schema}.{prefix}saga_timers` (migration 0009).

A claim is one statement: due rows picked in due order with `FOR UPDATE SKIP LOCKED`
(concurrent claims from several engine processes skip each other's rows instead of waiting
or taking them twice), stamped with the claim's token and `claimed_until`, and committed at
once; nothing holds a transaction while the saga runs. Times are parameters from the
engine's clock, not `now()`, so every process and a test clock agree on what is due.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from eventsource._internal.pg_table import PostgreSQLTable
from eventsource.sagas.timers import ClaimedTimer, Timer, TimerStore

if TYPE_CHECKING:
    pass

__all__ = ["PostgreSQLTimerStore"]


def _timer(row: Sequence[Any]) -> Timer:
    return Timer(UUID(str(row[0])), row[1], row[2], row[3])


class PostgreSQLTimerStore(PostgreSQLTable, TimerStore):
    """Saga timers beside a `PostgreSQLEventStore` (`for_store`) or on any engine."""

    TABLE = "saga_timers"

    def _statements(self, t: str) -> None:
        self._schedule_sql = (
            f"INSERT INTO {t} (saga_id, name, due_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (saga_id, name) DO UPDATE SET due_at = EXCLUDED.due_at,"
            f" generation = {t}.generation + 1"
        )
        self._cancel_sql = f"DELETE FROM {t} WHERE saga_id = $1 AND name = $2 RETURNING 1"
        self._claim_sql = (
            f"WITH c AS (SELECT saga_id, name FROM {t} WHERE due_at <= $1"
            " AND (claimed_until IS NULL OR claimed_until <= $1)"
            " ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            f" UPDATE {t} u SET claimed_by = $3, claimed_until = $1 + $4::interval FROM c"
            " WHERE u.saga_id = c.saga_id AND u.name = c.name"
            " RETURNING u.saga_id, u.name, u.due_at, u.generation"
        )
        self._complete_sql = (
            f"DELETE FROM {t} WHERE saga_id = $1 AND name = $2 AND generation = $3 RETURNING 1"
        )
        self._unclaim_sql = (
            f"UPDATE {t} SET claimed_by = NULL, claimed_until = NULL"
            " WHERE saga_id = $1 AND name = $2 AND claimed_by = $3"
        )
        self._release_sql = (
            f"UPDATE {t} SET claimed_by = NULL, claimed_until = NULL,"
            " due_at = CASE WHEN generation = $4 THEN $5 ELSE due_at END"
            " WHERE saga_id = $1 AND name = $2 AND claimed_by = $3"
        )
        columns = "saga_id, name, due_at, generation"
        self._pending_sql = f"SELECT {columns} FROM {t} ORDER BY due_at, name"
        self._pending_of_sql = f"SELECT {columns} FROM {t} WHERE saga_id = $1 ORDER BY due_at, name"
        self._next_due_sql = f"SELECT min(greatest(due_at, claimed_until)) FROM {t}"

    async def schedule(self, saga_id: UUID, name: str, due_at: datetime) -> None:
        async with self._driver("schedule a timer") as conn:
            await conn.execute(self._schedule_sql, saga_id, name, due_at)

    async def cancel(self, saga_id: UUID, name: str) -> bool:
        async with self._driver("cancel a timer") as conn:
            return await conn.fetchval(self._cancel_sql, saga_id, name) is not None

    async def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> list[ClaimedTimer]:
        token = uuid4()
        async with self._driver("claim due timers") as conn:
            rows = await conn.fetch(self._claim_sql, now, limit, token, lease)
        claimed = [ClaimedTimer(UUID(str(r[0])), r[1], r[2], r[3], token) for r in rows]
        return sorted(claimed, key=lambda timer: timer.due_at)

    async def complete(self, timer: ClaimedTimer) -> bool:
        async with self._driver("complete a timer") as conn:
            args = (timer.saga_id, timer.name)
            if await conn.fetchval(self._complete_sql, *args, timer.generation) is not None:
                return True
            await conn.execute(self._unclaim_sql, *args, timer.token)
            return False

    async def release(self, timer: ClaimedTimer, due_at: datetime) -> None:
        async with self._driver("release a timer") as conn:
            await conn.execute(
                self._release_sql, timer.saga_id, timer.name, timer.token, timer.generation, due_at
            )

    async def pending(self, saga_id: UUID | None = None) -> list[Timer]:
        async with self._driver("list timers") as conn:
            if saga_id is None:
                rows = await conn.fetch(self._pending_sql)
            else:
                rows = await conn.fetch(self._pending_of_sql, saga_id)
        return [_timer(row) for row in rows]

    async def next_due(self) -> datetime | None:
        async with self._driver("next due timer") as conn:
            value: datetime | None = await conn.fetchval(self._next_due_sql)
        return value
