"""SQL schema files (append-only, numbered) and the runner that applies them.

Each backend has a folder of ``NNNN_name.sql`` files. A file is never edited once released: a
change to the schema is a new file. Names in the files are tokens that the runner replaces with
quoted identifiers: ``{schema}``, ``{table:events}`` (schema-qualified, with the prefix) and
``{name:events_feed_idx}`` (an index or constraint name, with the prefix).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from eventsource._internal.sql import quote_identifier

__all__ = ["Migration", "lock_key", "load_migrations", "render"]

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


def lock_key(schema: str, prefix: str) -> int:
    """A signed 64-bit advisory-lock key for migrating one schema + prefix."""
    digest = hashlib.sha256(f"eventsource-migrations\x00{schema}\x00{prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
