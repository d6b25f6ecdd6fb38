"""Which PostgreSQL migrations a schema has, and the SQL that brings it up to date by hand.

`eventsource db status` and `eventsource db sql` read these: the status compares the history
table (`{prefix}migrations`) with the files this release ships, without taking the runner's
lock or changing anything; the script is what `apply_postgresql_migrations` would run, as
one transaction a DBA applies with psql, recording each file in the history table exactly as
the runner does (same checksums), so that a store opened afterwards finds nothing to do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from eventsource.migrations import (
    Migration,
    check_names,
    history_ddl,
    history_table,
    load_migrations,
    lock_key,
    render,
)

__all__ = ["MigrationState", "components", "postgresql_script", "read_postgresql_status"]

Status = Literal["applied", "pending", "changed", "newer"]
"""`changed`: applied, but the shipped file differs since (the runner refuses it); `newer`:
recorded by a newer release, not shipped by this one (the runner refuses it too)."""

_TABLE = re.compile(r"\{table:(\w+)\}")


@dataclass(frozen=True, slots=True)
class MigrationState:
    """One migration as a schema has it."""

    version: int
    name: str
    components: tuple[str, ...]
    """The tables it creates or changes (`events`, `snapshots`, `outbox`, ...), unprefixed."""
    status: Status
    applied_at: datetime | None


def components(migration: Migration) -> tuple[str, ...]:
    """The tables a migration file names, in the order it first names them."""
    return tuple(dict.fromkeys(_TABLE.findall(migration.template)))


async def read_postgresql_status(
    connection: Any, *, schema: str, prefix: str
) -> list[MigrationState]:
    """The state of every shipped (and every recorded) migration in `schema` with `prefix`,
    in version order, read on an asyncpg connection (nothing is created or locked)."""
    check_names(schema, prefix)
    history = history_table(schema, prefix)
    exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", history)
    recorded: dict[int, tuple[str, str, datetime]] = {}
    if exists:
        rows = await connection.fetch(f"SELECT version, name, checksum, applied_at FROM {history}")
        recorded = {row[0]: (row[1], row[2], row[3]) for row in rows}
    states: list[MigrationState] = []
    shipped = load_migrations("postgresql")
    for migration in shipped:
        record = recorded.pop(migration.version, None)
        if record is None:
            status: Status = "pending"
        else:
            status = "applied" if record[1] == migration.checksum else "changed"
        states.append(
            MigrationState(
                migration.version,
                migration.name,
                components(migration),
                status,
                None if record is None else record[2],
            )
        )
    for version, (name, _, applied_at) in recorded.items():
        states.append(MigrationState(version, name, (), "newer", applied_at))
    states.sort(key=lambda state: state.version)
    return states


def postgresql_script(*, schema: str, prefix: str, versions: Sequence[int] | None = None) -> str:
    """The SQL that applies the shipped migrations `versions` (default: all) to `schema` with
    `prefix`, as the runner would: one transaction under the runner's advisory lock, each
    file followed by its row in the history table. Meant for the pending migrations of a
    schema (`read_postgresql_status`); the files are not written to run twice."""
    check_names(schema, prefix)
    shipped = load_migrations("postgresql")
    chosen = [m for m in shipped if versions is None or m.version in versions]
    history = history_table(schema, prefix)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in chosen) or "none"
    parts = [
        f"-- eventsource migrations for schema {schema!r}, prefix {prefix!r}: {names}",
        "BEGIN;",
        f"SELECT pg_advisory_xact_lock({lock_key(schema, prefix)});",
        *(f"{statement};" for statement in history_ddl(schema, prefix)),
    ]
    for migration in chosen:
        parts.append(f"\n-- {migration.version:04d}_{migration.name}")
        parts.append(render(migration.template, schema=schema, prefix=prefix).strip())
        parts.append(
            f"INSERT INTO {history} (version, name, checksum) VALUES ({migration.version}, "
            f"{_literal(migration.name)}, {_literal(migration.checksum)});"
        )
    parts.append("\nCOMMIT;")
    return "\n".join(parts) + "\n"


def _literal(text: str) -> str:
    """A SQL string literal (the names and checksums of shipped files: word characters)."""
    return "'" + text.replace("'", "''") + "'"
