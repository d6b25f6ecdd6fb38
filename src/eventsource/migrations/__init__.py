"""SQL schema files (append-only, numbered) and the runner that applies them.

Each backend has a folder of ``NNNN_name.sql`` files. A file is never edited once released: a
change to the schema is a new file. Names in the files are tokens that the runner replaces with
quoted identifiers: ``{schema}``, ``{table:events}`` (schema-qualified, with the prefix) and
``{name:events_feed_idx}`` (an index or constraint name, with the prefix).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from typing import Any

from eventsource._internal.sql import check_postgresql_names, quote_identifier
from eventsource.exceptions import StoreSchemaError

__all__ = [
    "Migration",
    "apply_postgresql_migrations",
    "check_names",
    "derived_names",
    "history_ddl",
    "history_table",
    "load_migrations",
    "lock_key",
    "render",
]

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
_TOKEN = re.compile(r"\{(schema|table|name)(?::(\w+))?\}")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    template: str

    @property
    def checksum(self) -> str:
        """Of the file as shipped (before names are filled in), to detect edited files."""
        return hashlib.sha256(self.template.encode()).hexdigest()


def load_migrations(backend: str) -> list[Migration]:
    """The migrations shipped for `backend` ("postgresql"), in version order."""
    folder = resources.files(__name__).joinpath(backend)
    migrations = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            migrations.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two {backend} migrations share a number: {versions}")
    return migrations


_log = logging.getLogger(__name__)

_HISTORY = "migrations"
"""The table (prefix + this) recording which migrations were applied."""


@functools.cache
def derived_names(backend: str = "postgresql") -> frozenset[str]:
    """Every name the shipped migrations derive from a prefix (tables, indexes, constraints),
    plus the history table: what `{table:...}` and `{name:...}` tokens and the runner add."""
    names = {_HISTORY}
    for migration in load_migrations(backend):
        names.update(m[2] for m in _TOKEN.finditer(migration.template) if m[2])
    return frozenset(names)


def check_names(schema: str, prefix: str) -> None:
    """`ConfigurationError` unless PostgreSQL keeps `schema` and every name made from `prefix`
    whole (63 bytes in UTF-8), so stores never share or collide through cut names."""
    check_postgresql_names(schema, prefix, derived_names("postgresql"))


def render(template: str, *, schema: str, prefix: str) -> str:
    """Fill the name tokens of a migration with quoted identifiers."""

    def replace(match: re.Match[str]) -> str:
        kind, name = match[1], match[2]
        if kind == "schema":
            return quote_identifier(schema)
        if name is None:
            raise ValueError(f"token {match[0]} needs a name")
        quoted = quote_identifier(prefix + name)
        return f"{quote_identifier(schema)}.{quoted}" if kind == "table" else quoted

    return _TOKEN.sub(replace, template)


def history_table(schema: str, prefix: str) -> str:
    """The quoted, schema-qualified name of the table recording the applied migrations."""
    return f"{quote_identifier(schema)}.{quote_identifier(prefix + _HISTORY)}"


def history_ddl(schema: str, prefix: str) -> list[str]:
    """The schema and the history table, if missing: what the runner (and a hand-applied
    script, `eventsource.migrations.status.postgresql_script`) creates first."""
    return [
        f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}",
        f"CREATE TABLE IF NOT EXISTS {history_table(schema, prefix)} (version integer PRIMARY"
        " KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())",
    ]


def lock_key(schema: str, prefix: str) -> int:
    """A signed 64-bit advisory-lock key for migrating one schema + prefix."""
    digest = hashlib.sha256(f"eventsource-migrations\x00{schema}\x00{prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def apply_postgresql_migrations(
    connection: Any, *, schema: str, prefix: str, allow_newer: bool = False
) -> list[int]:
    """Apply the PostgreSQL migrations not applied yet, on an asyncpg connection.

    One transaction under an advisory lock, so concurrent runs (several processes starting at
    once) serialize and the later ones find nothing to do. Each applied file is recorded in
    `{schema}.{prefix}migrations` with its checksum; a recorded file whose checksum changed
    raises `StoreSchemaError`. Returns the versions this call applied.

    A recorded migration this release does not ship means a newer release migrated the
    database: `StoreSchemaError`, unless `allow_newer` (for the old processes of a rolling
    deploy) turns it into a logged `RuntimeWarning`.
    """
    check_names(schema, prefix)
    history = history_table(schema, prefix)
    applied: list[int] = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema, prefix))
        for statement in history_ddl(schema, prefix):
            await connection.execute(statement)
        rows = await connection.fetch(f"SELECT version, name, checksum FROM {history}")
        done = {row[0]: row[2] for row in rows}
        shipped = load_migrations("postgresql")
        known = {migration.version for migration in shipped}
        unknown = [
            f"{row[0]:04d}_{row[1]}"
            for row in sorted(rows, key=lambda r: r[0])
            if row[0] not in known
        ]
        if unknown:
            _newer_schema(unknown, shipped, schema, prefix, allow_newer)
        for migration in shipped:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise StoreSchemaError(
                        f"migration {migration.version:04d}_{migration.name} changed after it "
                        f"was applied to {schema!r} (prefix {prefix!r}); migrations are "
                        "append-only: add a new one instead"
                    )
                continue
            await connection.execute(render(migration.template, schema=schema, prefix=prefix))
            await connection.execute(
                f"INSERT INTO {history} (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied.append(migration.version)
    return applied


def _newer_schema(
    unknown: list[str], shipped: list[Migration], schema: str, prefix: str, allow: bool
) -> None:
    """Refuse (or, when allowed, loudly warn about) a database migrated by a newer release."""
    latest = f"{shipped[-1].version:04d}_{shipped[-1].name}" if shipped else "none"
    message = (
        f"PostgreSQL schema {schema!r} (prefix {prefix!r}) was migrated by a newer release of "
        f"eventsource: migrations {', '.join(unknown)} are recorded there, but this release "
        f"ships migrations up to {latest} only and may misread or corrupt the newer tables. "
        "Upgrade eventsource-async to the release that applied them"
    )
    if not allow:
        raise StoreSchemaError(
            f"{message}; during a rolling deploy, where old and new releases run side by "
            "side, pass create_schema(allow_newer=True) on the old ones to only warn"
        )
    text = f"{message} (allow_newer is set: continuing)"
    _log.warning(text)
    warnings.warn(text, RuntimeWarning, stacklevel=3)
