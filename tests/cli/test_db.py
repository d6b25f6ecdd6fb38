"""`eventsource db`: init, upgrade, status and sql on PostgreSQL and SQLite, and bad input."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest

from eventsource.migrations import load_migrations
from eventsource.migrations.status import postgresql_script
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.testing.events import ItemAdded, contract_registry
from tests.cli._cli import one_line, run, run_json

SHIPPED = [migration.version for migration in load_migrations("postgresql")]


@pytest.fixture
def pg_url(postgres_url: str, schema: str) -> str:
    return f"{postgres_url}?schema={schema}&prefix=app_"


def _statuses(capsys: pytest.CaptureFixture[str], url: str) -> dict[int, str]:
    rows = run_json(capsys, "db", "status", "--url", url)
    return {row["version"]: row["status"] for row in rows}


async def _execute(postgres_url: str, sql: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.mark.postgresql
def test_status_then_init_on_a_fresh_schema(
    capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    assert _statuses(capsys, pg_url) == dict.fromkeys(SHIPPED, "pending")
    assert run(capsys, "db", "status", "--url", pg_url, "--check")[0] == 1
    status, out, _ = run(capsys, "db", "status", "--url", pg_url)
    assert status == 0
    assert f"{len(SHIPPED)} pending; run `eventsource db upgrade`" in out
    assert "checkpoints, dead_letters" in out

    # upgrade never creates a schema from nothing (a misspelt schema would get new tables)
    status, out, err = run(capsys, "db", "upgrade", "--url", pg_url)
    assert (status, out) == (1, "")
    assert "StoreSchemaError" in one_line(err)
    assert "eventsource db init" in err

    applied = run_json(capsys, "db", "init", "--url", pg_url)
    assert [row["version"] for row in applied] == SHIPPED
    assert applied[0] == {"version": 1, "name": "events", "components": "events"}
    rows = run_json(capsys, "db", "status", "--url", pg_url)
    assert {row["version"]: row["status"] for row in rows} == dict.fromkeys(SHIPPED, "applied")
    assert all(row["applied_at"] for row in rows)
    assert run(capsys, "db", "status", "--url", pg_url, "--check")[0] == 0
    assert run_json(capsys, "db", "init", "--url", pg_url) == []


@pytest.mark.postgresql
def test_upgrade_applies_what_an_older_release_lacked(
    capsys: pytest.CaptureFixture[str], pg_url: str, postgres_url: str, schema: str
) -> None:
    older = SHIPPED[:-3]
    asyncio.run(
        _execute(postgres_url, postgresql_script(schema=schema, prefix="app_", versions=older))
    )
    before = _statuses(capsys, pg_url)
    assert [v for v, s in before.items() if s == "pending"] == SHIPPED[-3:]
    assert [v for v, s in before.items() if s == "applied"] == older

    applied = run_json(capsys, "db", "upgrade", "--url", pg_url)
    assert [row["version"] for row in applied] == SHIPPED[-3:]
    assert _statuses(capsys, pg_url) == dict.fromkeys(SHIPPED, "applied")
    status, out, _ = run(capsys, "db", "upgrade", "--url", pg_url)
    assert status == 0
    assert "up to date" in out


def _apply_by_hand(postgres_url: str, script: str, tmp_path: Path) -> None:
    """As docs/cli.md shows: `psql -v ON_ERROR_STOP=1 -f upgrade.sql` (asyncpg without psql)."""
    psql = shutil.which("psql")
    if psql is None:
        asyncio.run(_execute(postgres_url, script))
        return
    (tmp_path / "upgrade.sql").write_text(script)
    result = subprocess.run(
        [psql, postgres_url, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(tmp_path / "upgrade.sql")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.postgresql
def test_sql_applied_by_hand_makes_a_working_store(
    capsys: pytest.CaptureFixture[str],
    pg_url: str,
    postgres_url: str,
    schema: str,
    tmp_path: Path,
) -> None:
    status, script, err = run(capsys, "db", "sql", "--url", pg_url)
    assert (status, err) == (0, "")
    assert script.startswith("-- eventsource migrations")
    assert script.rstrip().endswith("COMMIT;")
    assert run(capsys, "db", "sql", "--url", pg_url, "--all")[1] == script
    _apply_by_hand(postgres_url, script, tmp_path)

    assert _statuses(capsys, pg_url) == dict.fromkeys(SHIPPED, "applied")
    assert "nothing to apply" in run(capsys, "db", "sql", "--url", pg_url)[1]

    async def use() -> None:
        async with PostgreSQLEventStore.from_url(
            postgres_url, schema=schema, prefix="app_", registry=contract_registry
        ) as store:
            assert await store.create_schema() == []  # the runner agrees: nothing left to do
            cart = uuid4()
            await store.append_events(cart, "Cart", [ItemAdded(name="by hand")], 0)
            [event] = [s.event async for s in store.read_all()]
            assert isinstance(event, ItemAdded)
            assert event.name == "by hand"

    asyncio.run(use())


@pytest.mark.postgresql
def test_sql_of_a_refused_schema_is_an_error(
    capsys: pytest.CaptureFixture[str], pg_url: str, postgres_url: str, schema: str
) -> None:
    assert run(capsys, "db", "init", "--url", pg_url)[0] == 0
    asyncio.run(
        _execute(
            postgres_url,
            f'INSERT INTO "{schema}".app_migrations (version, name, checksum)'
            " VALUES (9999, 'from_the_future', 'x')",
        )
    )
    assert _statuses(capsys, pg_url)[9999] == "newer"
    status, out, err = run(capsys, "db", "sql", "--url", pg_url)
    assert (status, out) == (1, "")
    assert "9999_from_the_future (newer)" in one_line(err)


@pytest.mark.postgresql
def test_unreachable_postgresql_is_a_typed_failure(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=5"
    status, out, err = run(capsys, "db", "status", "--url", url)
    assert (status, out) == (1, "")
    assert one_line(err).startswith("eventsource db status: StoreConnectionError: ")


def test_sqlite_init_status_and_upgrade_of_an_old_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    status, out, err = run(capsys, "db", "upgrade", "--url", url)
    assert (status, out) == (1, "")
    assert "no SQLite file" in one_line(err)
    assert not (tmp_path / "app.db").exists()

    rows = run_json(capsys, "db", "init", "--url", url)
    assert rows[0] == {"component": "events", "table": "events", "status": "present"}
    assert {row["component"] for row in rows} >= {"snapshots", "checkpoints", "outbox"}

    # a file an older release made: the events table without the lean columns
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute(
            "CREATE TABLE events (position INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT"
            " NULL UNIQUE, event_type TEXT NOT NULL, event_version INTEGER NOT NULL,"
            " aggregate_id TEXT NOT NULL, aggregate_type TEXT NOT NULL, aggregate_version"
            " INTEGER NOT NULL, tenant_id TEXT, occurred_at TEXT NOT NULL, recorded_at TEXT NOT"
            " NULL, payload TEXT NOT NULL, UNIQUE (aggregate_id, aggregate_version))"
        )
    conn.close()
    old_url = f"sqlite:///{old}"
    [events, *_] = run_json(capsys, "db", "status", "--url", old_url)
    assert events["status"] == "upgrade pending (adds correlation_id, causation_id, metadata)"
    assert run(capsys, "db", "status", "--url", old_url, "--check")[0] == 1
    [events, *_] = run_json(capsys, "db", "upgrade", "--url", old_url)
    assert events["status"] == "present"
    assert run(capsys, "db", "status", "--url", old_url, "--check")[0] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["db", "init", "--url", "memory://"], "has no tables to create"),
        (["db", "status", "--url", "sqlite:///:memory:"], "has no tables to create"),
        (["db", "status", "--url", "mysql://x/y"], "unsupported scheme 'mysql'"),
        (["db", "status"], "no store given: pass --url URL or set EVENTSOURCE_URL"),
        (["db", "sql", "--url", "sqlite:///x.db"], "SQLite files have no migration scripts"),
        (["db", "frob"], "invalid choice: 'frob'"),
        (["db", "status", "--url", "sqlite:///x.db", "--nope"], "unrecognized arguments: --nope"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("EVENTSOURCE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert message in one_line(err)
    assert not (tmp_path / "x.db").exists()


def test_url_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EVENTSOURCE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert run_json(capsys, "db", "init")[0]["status"] == "present"
    assert (tmp_path / "env.db").exists()
