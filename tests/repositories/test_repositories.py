"""The checkpoint and dead-letter contracts on every backend, then what only the database
backends promise: several instances on one database, typed errors.

PostgreSQL tests work in their own schema, dropped afterwards; SQLite tests in `tmp_path`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eventsource.exceptions import EventStoreError, StoreSchemaError
from eventsource.migrations import load_migrations
from eventsource.repositories import (
    CheckpointRepository,
    DLQRepository,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
)
from eventsource.stores.interface import Position, StoredEvent
from eventsource.testing import CheckpointRepositoryContract, DLQRepositoryContract
from eventsource.testing.events import ItemAdded

ODD_PREFIX = 'my "odd" '


class TestInMemoryCheckpointRepository(CheckpointRepositoryContract):
    async def create_repository(self) -> CheckpointRepository:
        return InMemoryCheckpointRepository()


class TestInMemoryDLQRepository(DLQRepositoryContract):
    async def create_repository(self) -> DLQRepository:
        return InMemoryDLQRepository()


class _SQLiteFile:
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "subscriptions.db"


@pytest.mark.sqlite
class TestSQLiteCheckpointRepository(_SQLiteFile, CheckpointRepositoryContract):
    async def create_repository(self) -> CheckpointRepository:
        from eventsource.repositories import SQLiteCheckpointRepository

        return SQLiteCheckpointRepository(self.path)


@pytest.mark.sqlite
class TestSQLiteDLQRepository(_SQLiteFile, DLQRepositoryContract):
    async def create_repository(self) -> DLQRepository:
        from eventsource.repositories import SQLiteDLQRepository

        return SQLiteDLQRepository(self.path, prefix=ODD_PREFIX)


class _PostgreSQLSchema:
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema


@pytest.mark.postgresql
class TestPostgreSQLCheckpointRepository(_PostgreSQLSchema, CheckpointRepositoryContract):
    async def create_repository(self) -> CheckpointRepository:
        from eventsource.repositories import PostgreSQLCheckpointRepository

        repository = PostgreSQLCheckpointRepository.from_url(self.url, schema=self.schema)
        await repository.create_schema()
        return repository


@pytest.mark.postgresql
class TestPostgreSQLDLQRepository(_PostgreSQLSchema, DLQRepositoryContract):
    async def create_repository(self) -> DLQRepository:
        from eventsource.repositories import PostgreSQLDLQRepository

        repository = PostgreSQLDLQRepository.from_url(
            self.url, schema=self.schema, prefix=ODD_PREFIX
        )
        await repository.create_schema()
        return repository


async def _contend(
    checkpoints: Sequence[CheckpointRepository], dead_letters: Sequence[DLQRepository]
) -> None:
    """Instances on one database (as separate processes would be) contend through it."""
    positions = [Position(commit, sequence) for commit in range(1, 6) for sequence in range(8)]
    random.Random(9).shuffle(positions)
    await asyncio.gather(
        *(checkpoints[n % len(checkpoints)].save("race", p) for n, p in enumerate(positions))
    )
    await asyncio.gather(*(repository.save("same", Position(2, 2)) for repository in checkpoints))
    race, same = await checkpoints[0].get("race"), await checkpoints[-1].get("same")
    assert race is not None
    assert race.position == max(positions)
    assert 1 <= race.events_processed <= len(positions)
    assert same is not None
    assert same.events_processed == 1

    stored = StoredEvent(ItemAdded(name="x"), Position(1, 1), datetime.now(UTC))
    letters = await asyncio.gather(
        *(repository.add("billing", stored, ValueError("boom"), 1) for repository in dead_letters)
    )
    assert len({letter.id for letter in letters}) == 1
    assert sorted(letter.attempts for letter in letters) == list(range(1, len(dead_letters) + 1))
    retries = await asyncio.gather(
        *(repository.mark_retrying(letters[0].id) for repository in [*dead_letters] * 3)
    )
    assert sorted(retries) == [False] * (len(retries) - 1) + [True]


@pytest.mark.sqlite
async def test_sqlite_instances_on_one_file_contend_safely(tmp_path: Path) -> None:
    from eventsource.repositories import SQLiteCheckpointRepository, SQLiteDLQRepository

    path = tmp_path / "shared.db"
    checkpoints = [SQLiteCheckpointRepository(path, prefix=ODD_PREFIX) for _ in range(4)]
    dead_letters = [SQLiteDLQRepository(path) for _ in range(4)]
    try:
        await _contend(checkpoints, dead_letters)
    finally:
        for repository in [*checkpoints, *dead_letters]:
            await repository.close()


@pytest.mark.sqlite
async def test_sqlite_errors_are_typed(tmp_path: Path) -> None:
    from eventsource.repositories import SQLiteCheckpointRepository

    with pytest.raises(ValueError, match="synchronous"):
        SQLiteCheckpointRepository(tmp_path / "x.db", synchronous="SOMETIMES")
    async with SQLiteCheckpointRepository(tmp_path / "missing" / "x.db") as repository:
        with pytest.raises(EventStoreError, match="directory exists"):
            await repository.get("orders")


@pytest.mark.postgresql
async def test_postgresql_instances_on_one_schema_contend_safely(
    postgres_url: str, schema: str
) -> None:
    from eventsource.repositories import PostgreSQLCheckpointRepository, PostgreSQLDLQRepository

    checkpoints = [
        PostgreSQLCheckpointRepository.from_url(postgres_url, schema=schema) for _ in range(4)
    ]
    dead_letters = [PostgreSQLDLQRepository.from_url(postgres_url, schema=schema) for _ in range(4)]
    try:
        await checkpoints[0].create_schema()
        await _contend(checkpoints, dead_letters)
    finally:
        for repository in [*checkpoints, *dead_letters]:
            await repository.close()


@pytest.mark.postgresql
async def test_postgresql_create_schema_creates_every_table(postgres_url: str, schema: str) -> None:
    from eventsource.repositories import PostgreSQLCheckpointRepository, PostgreSQLDLQRepository

    async with (
        PostgreSQLCheckpointRepository.from_url(postgres_url, schema=schema) as checkpoints,
        PostgreSQLDLQRepository.from_url(postgres_url, schema=schema) as dead_letters,
    ):
        with pytest.raises(StoreSchemaError, match="create_schema"):
            await checkpoints.get("orders")
        with pytest.raises(StoreSchemaError, match="dead_letters"):
            await dead_letters.count()
        assert await checkpoints.create_schema() == [
            m.version for m in load_migrations("postgresql")
        ]
        assert await dead_letters.create_schema() == []
        await checkpoints.save("orders", Position(1, 1))
        assert await dead_letters.count() == 0


@pytest.mark.postgresql
async def test_postgresql_checkpoints_in_a_transaction_report_and_lock(
    postgres_url: str, schema: str
) -> None:
    """`save_in` says whether it moved the checkpoint; `locked_position_in` waits for a
    transaction that is moving it (a deliberately held commit) and reads what it committed."""
    import asyncpg

    from eventsource.repositories import PostgreSQLCheckpointRepository

    async with PostgreSQLCheckpointRepository.from_url(postgres_url, schema=schema) as repo:
        await repo.create_schema()
        async with repo.engine.begin() as conn:
            assert await repo.save_in(conn, "orders", Position(5, 1)) is True
            assert await repo.save_in(conn, "orders", Position(5, 1)) is False
            assert await repo.save_in(conn, "orders", Position(4, 9)) is False
            assert await repo.locked_position_in(conn, "orders") == Position(5, 1)
            assert await repo.locked_position_in(conn, "nobody") is None
        admin = await asyncpg.connect(postgres_url)
        try:
            async with repo.engine.begin() as mover:
                assert await repo.save_in(mover, "orders", Position(7, 2)) is True

                async def read_locked() -> Position | None:
                    async with repo.engine.begin() as reader:
                        return await repo.locked_position_in(reader, "orders")

                reading = asyncio.create_task(read_locked())
                while not await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%FOR UPDATE%' AND query LIKE $1",
                    f"%{schema}%",
                ):
                    assert not reading.done()
                    await asyncio.sleep(0.01)
            assert await reading == Position(7, 2)  # the committed move, not the row before
        finally:
            await admin.close()


@pytest.mark.sqlite
async def test_sqlite_dead_letters_of_an_older_file_are_upgraded_and_kept(tmp_path: Path) -> None:
    """A file whose dead_letters table predates raw payloads (payload NOT NULL, no envelope
    columns) is rebuilt on open: its letters stay, and undecodable events can be parked."""
    import sqlite3
    from uuid import uuid4

    from eventsource.events.registry import EventRegistry
    from eventsource.events.serialization import EventCodec
    from eventsource.repositories import SQLiteDLQRepository

    path = tmp_path / "old.db"
    old_id, event_id = uuid4(), uuid4()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE dead_letters (id TEXT PRIMARY KEY, subscription TEXT NOT NULL,"
            " event_id TEXT NOT NULL, event_type TEXT NOT NULL, position_commit INTEGER NOT NULL,"
            " position_sequence INTEGER NOT NULL, payload TEXT NOT NULL, error TEXT NOT NULL,"
            " traceback TEXT NOT NULL, attempts INTEGER NOT NULL,"
            " status TEXT NOT NULL CHECK (status IN ('failed', 'retrying', 'resolved')),"
            " first_failed_at TEXT NOT NULL, last_failed_at TEXT NOT NULL, resolved_at TEXT,"
            " resolved_by TEXT, UNIQUE (subscription, event_id))"
        )
        conn.execute(
            "CREATE INDEX dead_letters_status_idx ON dead_letters"
            " (subscription, status, first_failed_at)"
        )
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        conn.execute(
            "INSERT INTO dead_letters VALUES (?, 'billing', ?, 'ItemAdded', 0, 3, '{\"name\": 1}',"
            " 'ValueError: x', 'Traceback', 2, 'failed', ?, ?, NULL, NULL)",
            (str(old_id), str(event_id), now, now),
        )
    undecodable = StoredEvent.from_row(
        EventCodec(EventRegistry()),
        Position(0, 4),
        datetime.now(UTC),
        uuid4(),
        "Unknown",
        1,
        uuid4(),
        "Cart",
        1,
        "{not json",
    )
    repositories = [SQLiteDLQRepository(path) for _ in range(3)]
    try:
        counts = await asyncio.gather(*(r.count() for r in repositories))  # all upgrade at once
        assert counts == [1, 1, 1]
        old = await repositories[0].get(old_id)
        assert old is not None
        assert (old.event_id, old.payload, old.attempts, old.undecodable) == (
            event_id,
            '{"name": 1}',
            2,
            False,
        )
        assert old.event_version is None
        letter = await repositories[1].add("billing", undecodable, ValueError("x"), 1)
        assert (letter.payload, letter.undecodable) == ("{not json", True)
    finally:
        for repository in repositories:
            await repository.close()
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {n for n in names if not n.startswith("sqlite_")} == {
        "dead_letters",
        "dead_letters_status_idx",
    }
