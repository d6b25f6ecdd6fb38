"""Checkpoints and dead letters on SQL tables, written once for PostgreSQL and SQLite.

Both dialects run the same statements. They differ in how a statement names its parameters
(`$1` for asyncpg, `?1` for SQLite; both let a number repeat) and in the values their drivers
take and return (UUIDs and datetimes natively on asyncpg, text on SQLite). A backend supplies
the placeholder style and `_fetch`, which runs one statement with values its driver accepts;
the statements and the logic live here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar
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
from eventsource.stores.interface import Position, StoredEvent

__all__ = [
    "Param",
    "SQLCheckpointRepository",
    "SQLDLQRepository",
    "SQLRepository",
    "postgresql_param",
    "sqlite_param",
]

Param = Callable[[int], str]
"""The text of the n-th parameter (from 1) of a statement in a dialect."""


def postgresql_param(n: int) -> str:
    return f"${n}"


def sqlite_param(n: int) -> str:
    return f"?{n}"


def _params(param: Param, count: int) -> str:
    return ", ".join(param(n) for n in range(1, count + 1))


def _uuid(value: Any) -> UUID:
    """asyncpg returns its own UUID class and SQLite text: both become `uuid.UUID`."""
    return value if type(value) is UUID else UUID(str(value))


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


class SQLRepository(ABC):
    """What a backend plugs into: the table's name and a way to run one statement."""

    TABLE: ClassVar[str]
    """The table's name, which the backend prefixes."""

    @abstractmethod
    def _prepare(self, table: str, param: Param) -> None:
        """Build the statements on `table` (quoted) with the dialect's parameters."""

    @abstractmethod
    async def _fetch(self, what: str, sql: str, *params: Any) -> list[Any]:
        """Run one statement: its rows (none for a write without RETURNING)."""


_CHECKPOINT = (
    "name, position_commit, position_sequence, event_id, event_type, events_processed, updated_at"
)


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(
        name=row[0],
        position=Position(int(row[1]), int(row[2])),
        event_id=None if row[3] is None else _uuid(row[3]),
        event_type=row[4],
        events_processed=int(row[5]),
        updated_at=_time(row[6]),
    )


class SQLCheckpointRepository(SQLRepository, CheckpointRepository):
    TABLE = "checkpoints"

    def _prepare(self, table: str, param: Param) -> None:
        p = param
        self._get_sql = f"SELECT {_CHECKPOINT} FROM {table} WHERE name = {p(1)}"
        self._list_sql = f"SELECT {_CHECKPOINT} FROM {table} ORDER BY name"
        self._delete_sql = f"DELETE FROM {table} WHERE name = {p(1)}"
        upsert = (
            f"INSERT INTO {table} AS kept ({_CHECKPOINT}) VALUES ({_params(p, 7)})"
            " ON CONFLICT (name) DO UPDATE SET position_commit = excluded.position_commit,"
            " position_sequence = excluded.position_sequence, event_id = excluded.event_id,"
            " event_type = excluded.event_type, updated_at = excluded.updated_at,"
        )
        # The WHERE makes saves monotonic inside the statement: the row is locked while it is
        # compared, so a stale or concurrent save of an earlier position changes nothing (and
        # adds nothing to the count), whatever the interleaving.
        self._save_sql = upsert + (
            " events_processed = kept.events_processed + excluded.events_processed"
            " WHERE (kept.position_commit, kept.position_sequence)"
            " < (excluded.position_commit, excluded.position_sequence)"
        )
        self._reset_sql = upsert + " events_processed = excluded.events_processed"

    async def get(self, name: str) -> Checkpoint | None:
        rows = await self._fetch(f"read the checkpoint {name!r}", self._get_sql, name)
        return _checkpoint(rows[0]) if rows else None

    async def save(
        self,
        name: str,
        position: Position,
        *,
        event_id: UUID | None = None,
        event_type: str | None = None,
        processed: int = 1,
    ) -> None:
        await self._fetch(
            f"save the checkpoint {name!r} at {position}",
            self._save_sql,
            *self._save_params(name, position, event_id, event_type, processed),
        )

    @staticmethod
    def _save_params(
        name: str,
        position: Position,
        event_id: UUID | None,
        event_type: str | None,
        processed: int,
    ) -> tuple[Any, ...]:
        return (
            name,
            position.commit,
            position.sequence,
            event_id,
            event_type,
            processed,
            utc_now(),
        )

    async def reset(self, name: str, position: Position | None = None) -> None:
        if position is None:
            await self._fetch(f"delete the checkpoint {name!r}", self._delete_sql, name)
            return
        await self._fetch(
            f"reset the checkpoint {name!r} to {position}",
            self._reset_sql,
            name,
            position.commit,
            position.sequence,
            None,
            None,
            0,
            utc_now(),
        )

    async def list(self) -> list[Checkpoint]:
        return [_checkpoint(row) for row in await self._fetch("list checkpoints", self._list_sql)]


_DEAD_LETTER = (
    "id, subscription, event_id, event_type, position_commit, position_sequence, payload,"
    " error, traceback, attempts, status, first_failed_at, last_failed_at, resolved_at,"
    " resolved_by, raw_payload, event_version, aggregate_id, aggregate_type, aggregate_version"
)
# The same columns as read back. A letter keeps the event's JSON in `payload` (jsonb on
# PostgreSQL), or, for a row the reader could not decode, its stored text in `raw_payload`.
_READ_DEAD_LETTER = (
    "id, subscription, event_id, event_type, position_commit, position_sequence,"
    " COALESCE(CAST(payload AS TEXT), raw_payload), error, traceback, attempts, status,"
    " first_failed_at, last_failed_at, resolved_at, resolved_by,"
    " CASE WHEN raw_payload IS NULL THEN 0 ELSE 1 END, event_version, aggregate_id,"
    " aggregate_type, aggregate_version"
)


def _value(status: DeadLetterStatus | None) -> str | None:
    return None if status is None else status.value


def _dead_letter(row: Any) -> DeadLetter:
    return DeadLetter(
        id=_uuid(row[0]),
        subscription=row[1],
        event_id=_uuid(row[2]),
        event_type=row[3],
        position=Position(int(row[4]), int(row[5])),
        payload=row[6],
        error=row[7],
        traceback=row[8],
        attempts=int(row[9]),
        status=DeadLetterStatus(row[10]),
        first_failed_at=_time(row[11]),
        last_failed_at=_time(row[12]),
        resolved_at=None if row[13] is None else _time(row[13]),
        resolved_by=row[14],
        undecodable=bool(row[15]),
        event_version=row[16],
        aggregate_id=None if row[17] is None else _uuid(row[17]),
        aggregate_type=row[18],
        aggregate_version=None if row[19] is None else int(row[19]),
    )


class SQLDLQRepository(SQLRepository, DLQRepository):
    TABLE = "dead_letters"

    def _prepare(self, table: str, param: Param) -> None:
        p = param
        # One statement records a first failure or updates the letter of an earlier one, so
        # concurrent failures of one event add up on one row.
        self._add_sql = (
            f"INSERT INTO {table} AS kept ({_DEAD_LETTER}) VALUES ({_params(p, 13)}, NULL, NULL,"
            f" {p(14)}, {p(15)}, {p(16)}, {p(17)}, {p(18)})"
            " ON CONFLICT (subscription, event_id) DO UPDATE SET error = excluded.error,"
            " payload = excluded.payload, raw_payload = excluded.raw_payload,"
            " event_version = excluded.event_version, aggregate_id = excluded.aggregate_id,"
            " aggregate_type = excluded.aggregate_type,"
            " aggregate_version = excluded.aggregate_version,"
            " traceback = excluded.traceback, attempts = kept.attempts + excluded.attempts,"
            " status = excluded.status, last_failed_at = excluded.last_failed_at,"
            f" resolved_at = NULL, resolved_by = NULL RETURNING {_READ_DEAD_LETTER}"
        )
        self._get_sql = f"SELECT {_READ_DEAD_LETTER} FROM {table} WHERE id = {p(1)}"
        # The CASTs give PostgreSQL a type for a parameter that may be NULL.
        where = (
            f" WHERE (CAST({p(1)} AS TEXT) IS NULL OR subscription = {p(1)})"
            f" AND (CAST({p(2)} AS TEXT) IS NULL OR status = {p(2)})"
        )
        self._list_sql = (
            f"SELECT {_READ_DEAD_LETTER} FROM {table}{where}"
            f" ORDER BY first_failed_at, id LIMIT {p(3)}"
        )
        self._count_sql = f"SELECT count(*) FROM {table}{where}"
        # Status changes compare and set in one statement: of concurrent callers, the first
        # changes the row and the others find it changed already (no row returned).
        self._mark_retrying_sql = (
            f"UPDATE {table} SET status = {p(2)} WHERE id = {p(1)} AND status = {p(3)} RETURNING id"
        )
        self._resolve_sql = (
            f"UPDATE {table} SET status = {p(2)}, resolved_at = {p(3)}, resolved_by = {p(4)}"
            f" WHERE id = {p(1)} AND status <> {p(2)} RETURNING id"
        )

    async def add(
        self, subscription: str, stored: StoredEvent, error: BaseException, attempts: int
    ) -> DeadLetter:
        text, trace = describe_error(error)
        payload, raw = letter_payload(stored)
        now = utc_now()
        rows = await self._fetch(
            f"record the failure of {subscription!r} on event {stored.event_id}",
            self._add_sql,
            uuid7(),
            subscription,
            stored.event_id,
            stored.event_type,
            stored.position.commit,
            stored.position.sequence,
            payload,
            text,
            trace,
            attempts,
            DeadLetterStatus.FAILED.value,
            now,
            now,
            raw,
            stored.event_version,
            stored.aggregate_id,
            stored.aggregate_type,
            stored.version,
        )
        return _dead_letter(rows[0])

    async def get(self, dead_letter_id: UUID) -> DeadLetter | None:
        rows = await self._fetch(
            f"read the dead letter {dead_letter_id}", self._get_sql, dead_letter_id
        )
        return _dead_letter(rows[0]) if rows else None

    async def count(
        self, subscription: str | None = None, *, status: DeadLetterStatus | None = None
    ) -> int:
        rows = await self._fetch(
            "count dead letters", self._count_sql, subscription, _value(status)
        )
        return int(rows[0][0])

    async def mark_retrying(self, dead_letter_id: UUID) -> bool:
        rows = await self._fetch(
            f"mark the dead letter {dead_letter_id} as retrying",
            self._mark_retrying_sql,
            dead_letter_id,
            DeadLetterStatus.RETRYING.value,
            DeadLetterStatus.FAILED.value,
        )
        return bool(rows)

    async def resolve(self, dead_letter_id: UUID, *, resolved_by: str) -> bool:
        rows = await self._fetch(
            f"resolve the dead letter {dead_letter_id}",
            self._resolve_sql,
            dead_letter_id,
            DeadLetterStatus.RESOLVED.value,
            utc_now(),
            resolved_by,
        )
        return bool(rows)

    async def list(
        self,
        subscription: str | None = None,
        *,
        status: DeadLetterStatus | None = DeadLetterStatus.FAILED,
        limit: int = 100,
    ) -> list[DeadLetter]:
        rows = await self._fetch(
            "list dead letters", self._list_sql, subscription, _value(status), limit
        )
        return [_dead_letter(row) for row in rows]
