"""The timer contract on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventsource.sagas import InMemoryTimerStore, TimerStore
from eventsource.testing import TimerStoreContract


class TestInMemoryTimerStore(TimerStoreContract):
    async def create_timers(self) -> TimerStore:
        return InMemoryTimerStore()

    async def reopen(self, timers: TimerStore) -> TimerStore:
        return timers


@pytest.mark.sqlite
class TestSQLiteTimerStore(TimerStoreContract):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "timers.db"

    async def create_timers(self) -> TimerStore:
        from eventsource.sagas import SQLiteTimerStore

        return SQLiteTimerStore(self.path, table='saga "timers"')

    async def reopen(self, timers: TimerStore) -> TimerStore:
        from eventsource.sagas import SQLiteTimerStore

        return SQLiteTimerStore(self.path, table='saga "timers"')


@pytest.mark.postgresql
class TestPostgreSQLTimerStore(TimerStoreContract):
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema

    async def create_timers(self) -> TimerStore:
        from eventsource.sagas import PostgreSQLTimerStore

        timers = PostgreSQLTimerStore.from_url(self.url, schema=self.schema, prefix="t_")
        await timers.create_schema()
        return timers

    async def reopen(self, timers: TimerStore) -> TimerStore:
        from eventsource.sagas import PostgreSQLTimerStore

        return PostgreSQLTimerStore.from_url(self.url, schema=self.schema, prefix="t_")
