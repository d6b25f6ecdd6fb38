"""`SQLiteTimerStore`: saga timers in a table of an SQLite file (usually the events' file),
created when the store first opens the file.

SQLite has one writer at a time: a claim is one `BEGIN IMMEDIATE` transaction that picks the
due rows and stamps them with its token, so two processes claiming at once take turns and
never claim one timer twice while its lease runs. Times are stored as ISO-8601 text in UTC
with microseconds, which sorts like the times themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

from eventsource._internal.sql import quote_identifier
from eventsource.outbox.sqlite import _SQLiteTable
from eventsource.sagas.timers import ClaimedTimer, Timer, TimerStore

__all__ = ["SQLiteTimerStore"]


def _text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _ddl(table: str) -> list[str]:
    t = quote_identifier(table)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} (saga_id TEXT NOT NULL, name TEXT NOT NULL,"
        " due_at TEXT NOT NULL, generation INTEGER NOT NULL DEFAULT 1, claimed_by TEXT,"
        " claimed_until TEXT, PRIMARY KEY (saga_id, name))",
        f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_due_idx')} ON {t} (due_at)",
    ]


class SQLiteTimerStore(_SQLiteTable, TimerStore):
    """Saga timers in `table` of the SQLite file at `path`."""

    def __init__(
        self,
        path: str | Path = "eventsource.db",
        *,
        table: str = "saga_timers",
        busy_timeout: float = 10.0,
        synchronous: str = "FULL",
    ) -> None:
        super().__init__(
            path, table, _ddl(table), busy_timeout=busy_timeout, synchronous=synchronous
        )
        t = self.table
        self._schedule_sql = (
            f"INSERT INTO {t} (saga_id, name, due_at) VALUES (?, ?, ?)"
            " ON CONFLICT (saga_id, name) DO UPDATE SET due_at = excluded.due_at,"
            " generation = generation + 1"
        )
        self._cancel_sql = f"DELETE FROM {t} WHERE saga_id = ? AND name = ? RETURNING 1"
        self._claim_sql = (
            f"UPDATE {t} SET claimed_by = ?1, claimed_until = ?2 WHERE rowid IN ("
            f"SELECT rowid FROM {t} WHERE due_at <= ?3"
            " AND (claimed_until IS NULL OR claimed_until <= ?3) ORDER BY due_at LIMIT ?4)"
            " RETURNING saga_id, name, due_at, generation"
        )
        self._complete_sql = (
            f"DELETE FROM {t} WHERE saga_id = ? AND name = ? AND generation = ? RETURNING 1"
        )
        self._unclaim_sql = (
            f"UPDATE {t} SET claimed_by = NULL, claimed_until = NULL"
            " WHERE saga_id = ? AND name = ? AND claimed_by = ?"
        )
        self._release_sql = (
            f"UPDATE {t} SET claimed_by = NULL, claimed_until = NULL,"
            " due_at = CASE WHEN generation = ?4 THEN ?5 ELSE due_at END"
            " WHERE saga_id = ?1 AND name = ?2 AND claimed_by = ?3"
        )
        columns = "saga_id, name, due_at, generation"
        self._pending_sql = f"SELECT {columns} FROM {t} ORDER BY due_at, name"
        self._pending_of_sql = f"SELECT {columns} FROM {t} WHERE saga_id = ? ORDER BY due_at, name"
        self._next_due_sql = f"SELECT min(max(due_at, coalesce(claimed_until, due_at))) FROM {t}"

    async def schedule(self, saga_id: UUID, name: str, due_at: datetime) -> None:
        await self._transaction(
            "schedule a timer", [(self._schedule_sql, (str(saga_id), name, _text(due_at)))]
        )

    async def cancel(self, saga_id: UUID, name: str) -> bool:
        rows = await self._transaction("cancel a timer", [(self._cancel_sql, (str(saga_id), name))])
        return bool(rows[0])

    async def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> list[ClaimedTimer]:
        token = uuid4()
        params = (str(token), _text(now + lease), _text(now), limit)
        rows = (await self._transaction("claim due timers", [(self._claim_sql, params)]))[0]
        claimed = [
            ClaimedTimer(UUID(r[0]), r[1], datetime.fromisoformat(r[2]), r[3], token) for r in rows
        ]
        return sorted(claimed, key=lambda timer: timer.due_at)

    async def complete(self, timer: ClaimedTimer) -> bool:
        key = (str(timer.saga_id), timer.name)
        rows = await self._transaction(
            "complete a timer", [(self._complete_sql, (*key, timer.generation))]
        )
        if rows[0]:
            return True
        await self._transaction("unclaim a timer", [(self._unclaim_sql, (*key, str(timer.token)))])
        return False

    async def release(self, timer: ClaimedTimer, due_at: datetime) -> None:
        params = (
            str(timer.saga_id),
            timer.name,
            str(timer.token),
            timer.generation,
            _text(due_at),
        )
        await self._transaction("release a timer", [(self._release_sql, params)])

    async def pending(self, saga_id: UUID | None = None) -> list[Timer]:
        statement: tuple[str, tuple[str, ...]]
        if saga_id is None:
            statement = (self._pending_sql, ())
        else:
            statement = (self._pending_of_sql, (str(saga_id),))
        rows = (await self._transaction("list timers", [statement]))[0]
        return [Timer(UUID(r[0]), r[1], datetime.fromisoformat(r[2]), r[3]) for r in rows]

    async def next_due(self) -> datetime | None:
        rows = (await self._transaction("next due timer", [(self._next_due_sql, ())]))[0]
        value = rows[0][0] if rows else None
        return None if value is None else datetime.fromisoformat(value)
