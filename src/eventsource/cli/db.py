"""`eventsource db`: create, upgrade and inspect the tables of a store's database.

    eventsource db init     create the tables (apply every migration)
    eventsource db upgrade  apply the pending migrations of a database already set up
    eventsource db status   applied and pending migrations, per component (--check: exit 1
                            unless up to date)
    eventsource db sql      the SQL `upgrade` would run, for a DBA to apply by hand (--all:
                            every migration, for an empty schema; needs no connection)

PostgreSQL runs the numbered migrations of `eventsource.migrations` (one sequence for every
component: events, snapshots, checkpoints, dead letters, outbox and inbox, saga timers, GDPR
keys), recorded in `{prefix}migrations`. `upgrade` refuses a schema without that record (a
misspelt schema would otherwise get a fresh set of tables): `init` creates one.

SQLite has no migration files: each component creates its table, and brings an older one up
to date, when it opens the file. `init` and `upgrade` open the event store (the events table,
and the outbox table with `?outbox=true`), `status` shows which component tables the file
has and whether the events table needs its upgrade; `sql` is refused (nothing to hand to a
DBA). Other URLs (memory://, nats://) have no tables: a one-line error, status 2.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from eventsource._internal.sql import quote_identifier
from eventsource.cli._ops import (
    CommandError,
    Output,
    add_common_options,
    runner,
    store_url,
    usage,
)
from eventsource.cli._stored import existing_sqlite_file
from eventsource.config import DatabaseURL, create_event_store, parse_database_url
from eventsource.exceptions import EventStoreError, StoreSchemaError
from eventsource.migrations import load_migrations
from eventsource.migrations.status import MigrationState, components, postgresql_script

if TYPE_CHECKING:
    from eventsource.stores.postgresql import PostgreSQLEventStore

__all__ = ["add_parser"]

_PROG = "eventsource db"
_SQLITE_TABLES = ("events", "snapshots", "checkpoints", "dead_letters", "outbox", "inbox")
"""The tables `eventsource.config` gives the components of a SQLite URL (after the prefix)."""
_LEAN_COLUMNS = ("correlation_id", "causation_id", "metadata")
"""What a SQLite events table of an older release lacks until a store opens it."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "db",
        help="create, upgrade and inspect the store's tables",
        description="Create and upgrade the tables of a PostgreSQL schema or SQLite file, "
        "show the applied and pending migrations, print their SQL.",
    )
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    for name, action, text in (
        ("init", _init, "create the tables (every migration)"),
        ("upgrade", _upgrade, "apply the pending migrations"),
        ("status", _status, "applied and pending migrations"),
        ("sql", _sql, "print the SQL that upgrade would run"),
    ):
        sub = subcommands.add_parser(name, help=text, description=text)
        add_common_options(sub)
        if name == "status":
            sub.add_argument(
                "--check", action="store_true", help="exit 1 unless every migration is applied"
            )
        if name == "sql":
            sub.add_argument(
                "--all",
                action="store_true",
                help="every migration, for an empty schema (no connection made)",
            )
        sub.set_defaults(handler=runner(f"{_PROG} {name}", action))
    parser.set_defaults(handler=usage(parser))


def _database(args: argparse.Namespace) -> DatabaseURL:
    """The PostgreSQL or SQLite database of the URL; `CommandError` for any other."""
    database = parse_database_url(store_url(args))
    if database.backend == "postgresql":
        return database
    if database.backend == "sqlite" and database.path != ":memory:":
        return database
    raise CommandError(
        f"{database.url}: the db commands manage PostgreSQL schemas and SQLite files; "
        f"{database.description} has no tables to create"
    )


@asynccontextmanager
async def _postgresql(url: str) -> AsyncIterator[PostgreSQLEventStore]:
    """The PostgreSQL store of `url` (its schema and prefix), closed on exit."""
    from eventsource.stores.postgresql import PostgreSQLEventStore

    store = create_event_store(url)
    assert isinstance(store, PostgreSQLEventStore)
    try:
        yield store
    finally:
        await store.close()


async def _open_sqlite(url: str) -> None:
    """Open (and close) the SQLite event store of `url`: it creates or upgrades its table."""
    from eventsource.stores.sqlite import SQLiteEventStore

    store = create_event_store(url)
    assert isinstance(store, SQLiteEventStore)
    try:
        await store.connect()
    finally:
        await store.close()


def _where(database: DatabaseURL) -> str:
    return f"{database.description}, table prefix {database.prefix!r}"


# -- init and upgrade --------------------------------------------------------------------------


async def _init(args: argparse.Namespace, out: Output) -> int:
    database = _database(args)
    if database.backend == "sqlite":
        await _open_sqlite(store_url(args))
        return _sqlite_report(database, out, check=False)
    async with _postgresql(store_url(args)) as store:
        applied = await store.create_schema()
    _applied_report(database, applied, out)
    return 0


async def _upgrade(args: argparse.Namespace, out: Output) -> int:
    database = _database(args)
    if database.backend == "sqlite":
        existing_sqlite_file(database.path)
        await _open_sqlite(store_url(args))
        return _sqlite_report(database, out, check=False)
    async with _postgresql(store_url(args)) as store:
        states = await store.migration_status()
        if all(state.status == "pending" for state in states):
            raise StoreSchemaError(
                f"{_where(database)}: no eventsource tables there yet (no migration "
                "recorded); run `eventsource db init` to create them, or check the URL's "
                "schema and prefix"
            )
        applied = await store.create_schema()
    _applied_report(database, applied, out)
    return 0


def _applied_report(database: DatabaseURL, applied: list[int], out: Output) -> None:
    shipped = {migration.version: migration for migration in load_migrations("postgresql")}
    rows = [
        [version, shipped[version].name, ", ".join(components(shipped[version]))]
        for version in applied
    ]
    if rows or out.json:
        out.table(("Version", "Name", "Components"), rows)
    if applied:
        out.message(f"applied {len(applied)} migrations to {_where(database)}")
    else:
        out.message(f"{_where(database)} is up to date: nothing to apply")


# -- status ------------------------------------------------------------------------------------


async def _status(args: argparse.Namespace, out: Output) -> int:
    database = _database(args)
    if database.backend == "sqlite":
        return _sqlite_report(database, out, check=args.check)
    async with _postgresql(store_url(args)) as store:
        states = await store.migration_status()
    rows = [[s.version, s.name, ", ".join(s.components), s.status, s.applied_at] for s in states]
    out.message(_where(database))
    out.table(("Version", "Name", "Components", "Status", "Applied at"), rows)
    out.message(_summary(states))
    return 1 if args.check and any(s.status != "applied" for s in states) else 0


def _summary(states: list[MigrationState]) -> str:
    counts: dict[str, int] = {}
    for state in states:
        counts[state.status] = counts.get(state.status, 0) + 1
    text = ", ".join(f"{count} {status}" for status, count in counts.items())
    if counts.get("pending"):
        text += "; run `eventsource db upgrade` (or apply `eventsource db sql`)"
    if counts.get("changed") or counts.get("newer"):
        text += (
            "; changed: a migration file differs from the one applied; newer: applied by a "
            "newer release of eventsource (upgrading is refused until resolved)"
        )
    return text


# -- sql ---------------------------------------------------------------------------------------


async def _sql(args: argparse.Namespace, out: Output) -> int:
    database = _database(args)
    if database.backend == "sqlite":
        raise CommandError(
            "SQLite files have no migration scripts: each component creates and upgrades "
            "its table when it opens the file; run `eventsource db upgrade` instead"
        )
    if args.all:
        versions = None
    else:
        async with _postgresql(store_url(args)) as store:
            states = await store.migration_status()
        refused = [f"{s.version:04d}_{s.name} ({s.status})" for s in states if s.status in _REFUSED]
        if refused:
            raise StoreSchemaError(
                f"{_where(database)}: {', '.join(refused)}; the runner refuses this schema "
                "(see `eventsource db status`), so there is no script to apply"
            )
        versions = [s.version for s in states if s.status == "pending"]
    script = (
        postgresql_script(schema=database.schema, prefix=database.prefix, versions=versions)
        if versions is None or versions
        else f"-- {_where(database)} is up to date: nothing to apply\n"
    )
    if out.json:
        out.record({"versions": versions, "sql": script})
    else:
        out.stream.write(script)
    return 0


_REFUSED = ("changed", "newer")


# -- SQLite ------------------------------------------------------------------------------------


def _sqlite_report(database: DatabaseURL, out: Output, *, check: bool) -> int:
    """The component tables of a SQLite file (read only; nothing is created)."""
    rows = _sqlite_tables(database)
    out.message(_where(database))
    out.table(("Component", "Table", "Status"), rows)
    events = rows[0][2]
    if events != "present":
        out.message(f"the events table is {events}: run `eventsource db upgrade` or `db init`")
    return 1 if check and events != "present" else 0


def _sqlite_tables(database: DatabaseURL) -> list[list[object]]:
    path = Path(database.path).resolve()
    tables = [database.prefix + name for name in _SQLITE_TABLES]
    if not path.exists():
        return [[n, t, "missing"] for n, t in zip(_SQLITE_TABLES, tables, strict=True)]
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise EventStoreError(f"SQLite file {path}: cannot open it to read: {exc}") from exc
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        columns: set[str] = set()
        if tables[0] in names:
            info = conn.execute(f"PRAGMA table_info({quote_identifier(tables[0])})")
            columns = {row[1] for row in info}
    except sqlite3.Error as exc:
        raise EventStoreError(f"SQLite file {path}: cannot read its tables: {exc}") from exc
    finally:
        conn.close()
    rows: list[list[object]] = []
    for name, table in zip(_SQLITE_TABLES, tables, strict=True):
        status = "present" if table in names else "missing"
        lacking = [c for c in _LEAN_COLUMNS if c not in columns]
        if name == "events" and status == "present" and lacking:
            status = f"upgrade pending (adds {', '.join(lacking)})"
        rows.append([name, table, status])
    return rows
