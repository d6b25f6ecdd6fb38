"""SQL helpers shared by the database backends: quoting, and the names PostgreSQL would cut."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from eventsource.exceptions import ConfigurationError

__all__ = [
    "POSTGRESQL_MAX_NAME_BYTES",
    "check_postgresql_names",
    "notify_channel",
    "quote_identifier",
]

POSTGRESQL_MAX_NAME_BYTES = 63
"""PostgreSQL keeps the first 63 bytes of a name (NAMEDATALEN - 1) and drops the rest."""


def quote_identifier(name: str) -> str:
    """Quote a table or schema name for SQL (identifiers are never formatted in unquoted)."""
    if not name or "\x00" in name:
        raise ConfigurationError(
            f"invalid SQL identifier {name!r}: a schema, table or index name must be "
            "non-empty and contain no NUL character"
        )
    return '"' + name.replace('"', '""') + '"'


def _size(name: str) -> int:
    return len(name.encode("utf-8", "surrogatepass"))


def check_postgresql_names(
    schema: str, prefix: str, suffixes: Iterable[str], *, what: str = "table prefix"
) -> None:
    """Refuse a `schema`, or a `prefix` + suffix name, that PostgreSQL would cut short.

    PostgreSQL truncates a longer name silently (or with a NOTICE): two schemas differing
    only after byte 63 would be the same schema, and two constraint names cut to the same
    63 bytes collide. `suffixes` are every name the caller derives from `prefix` (table,
    index and constraint names). `what` names `prefix` in the error. Raises
    `ConfigurationError` saying which name is too long and what fits.
    """
    quote_identifier(schema)
    if _size(schema) > POSTGRESQL_MAX_NAME_BYTES:
        raise ConfigurationError(
            f"PostgreSQL schema name {schema!r} is {_size(schema)} bytes long in UTF-8; "
            f"PostgreSQL keeps only the first {POSTGRESQL_MAX_NAME_BYTES} bytes of a name, so "
            "this store would silently share its tables with every schema whose name starts "
            f"with the same {POSTGRESQL_MAX_NAME_BYTES} bytes. Use a schema name of at most "
            f"{POSTGRESQL_MAX_NAME_BYTES} bytes"
        )
    if "\x00" in prefix:
        raise ConfigurationError(f"{what} {prefix!r} contains a NUL character")
    longest = max(suffixes, key=_size, default="")
    name = prefix + longest
    if _size(name) > POSTGRESQL_MAX_NAME_BYTES:
        room = POSTGRESQL_MAX_NAME_BYTES - _size(longest)
        raise ConfigurationError(
            f"{what} {prefix!r} is too long for PostgreSQL: it makes the name {name!r} "
            f"({_size(name)} bytes in UTF-8), and PostgreSQL keeps only the first "
            f"{POSTGRESQL_MAX_NAME_BYTES} bytes of a name, so names cut short would collide. "
            f"Use a {what} of at most {room} bytes"
        )


def notify_channel(schema: str, prefix: str) -> str:
    """The LISTEN/NOTIFY channel of the event table `prefix`events in `schema`.

    `schema.prefixevents` when it fits PostgreSQL's 63 bytes (counted in UTF-8, not in
    characters); otherwise its first bytes (cut on a character boundary) and a hash of the
    whole name, so long names still get distinct channels.
    """
    name = f"{schema}.{prefix}events"
    encoded = name.encode("utf-8", "surrogatepass")
    if len(encoded) <= POSTGRESQL_MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:16]
    head = encoded[: POSTGRESQL_MAX_NAME_BYTES - len(digest) - 1].decode("utf-8", "ignore")
    return f"{head}_{digest}"
