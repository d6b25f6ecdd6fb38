"""`PostgreSQLLeases`: one process at a time runs a subscription, by PostgreSQL advisory lock.

A lease is a session-level advisory lock held on a connection of its own. When the holder
dies, PostgreSQL drops its session and with it the lock, and a standby process takes over from
the last saved checkpoint. No heartbeat table, no clock: the database's own session liveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsource._internal import postgresql as pg
from eventsource._internal.optional import require

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["LeaseHolder", "PostgreSQLLease", "PostgreSQLLeases", "lease_key"]

_ALIVE_TIMEOUT = 5.0

_HOLDERS_SQL = (
    "SELECT l.classid::text::bigint, l.objid::text::bigint, a.pid, a.application_name,"
    " a.client_addr::text, a.backend_start"
    " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
"""Session advisory locks on a bigint key appear in `pg_locks` as its high and low 32 bits
(`classid`, `objid`) with `objsubid` 1."""


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """The session holding a subscription's lease, as PostgreSQL reports it."""

    pid: int
    """The backend's process id (`pg_stat_activity.pid`)."""
    application_name: str
    client_addr: str | None
    """The client's address; None over a Unix socket."""
    since: datetime
    """When that session connected."""


def lease_key(name: str, namespace: str = "") -> int:
    """The signed 64-bit advisory-lock key of a subscription name within a namespace."""
    digest = hashlib.sha256(f"eventsource-subscription\x00{namespace}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgreSQLLease:
    def __init__(self, connection: AsyncConnection, raw: Any, key: int) -> None:
        self._connection = connection
        self._raw = raw
        self._key = key
        self._released = False

    async def alive(self) -> bool:
        """Whether the lock's session still exists (one round trip)."""
        if self._released:
            return False
        try:
            async with asyncio.timeout(_ALIVE_TIMEOUT):
                await self._raw.fetchval("SELECT 1")
        except Exception:
            return False
        return True

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            await self._raw.execute("SELECT pg_advisory_unlock($1)", self._key)
        except Exception:
            with contextlib.suppress(Exception):
                await self._connection.invalidate()
        with contextlib.suppress(Exception):
            await self._connection.close()


class PostgreSQLLeases:
    """Leases on the database of `engine` (usually the event store's: `store.engine`).

    Advisory locks are per database, not per schema: `namespace` keeps the leases of
    applications (or schemas) sharing a database apart; `for_store` uses the store's schema and
    table prefix.
    """

    def __init__(self, engine: AsyncEngine | Any, *, namespace: str = "") -> None:
        require("asyncpg", extra="postgresql", feature="PostgreSQLLeases")
        self.engine: AsyncEngine = pg.engine_of(engine)
        self.namespace = namespace

    @classmethod
    def for_store(cls, store: Any) -> PostgreSQLLeases:
        """Leases on a `PostgreSQLEventStore`'s engine, namespaced by its schema and prefix."""
        return cls(store.engine, namespace=f"{store.schema}.{store.prefix}")

    async def try_acquire(self, name: str) -> PostgreSQLLease | None:
        """The lease of `name` if no other session holds it, else None (never waits)."""
        key = lease_key(name, self.namespace)
        try:
            connection = await self.engine.connect()
        except Exception as exc:
            raise pg.map_error(exc, f"lease {name!r}") from exc
        try:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            held = await raw.fetchval("SELECT pg_try_advisory_lock($1)", key)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await connection.invalidate()
            await connection.close()
            raise pg.map_error(exc, f"lease {name!r}") from exc
        if not held:
            await connection.close()
            return None
        return PostgreSQLLease(connection, raw, key)

    async def holders(self, names: Iterable[str]) -> dict[str, LeaseHolder]:
        """Who holds the leases of `names` now (names nobody holds are left out): read from
        `pg_locks`, so it sees every process's leases, takes none, and waits for nothing."""
        wanted: dict[tuple[int, int], str] = {}
        for name in names:
            unsigned = lease_key(name, self.namespace) & 0xFFFF_FFFF_FFFF_FFFF
            wanted[(unsigned >> 32, unsigned & 0xFFFF_FFFF)] = name
        try:
            async with self.engine.connect() as connection:
                raw = (await connection.get_raw_connection()).driver_connection
                assert raw is not None
                rows = await raw.fetch(_HOLDERS_SQL)
        except Exception as exc:
            raise pg.map_error(exc, "lease holders") from exc
        found: dict[str, LeaseHolder] = {}
        for high, low, pid, application, address, since in rows:
            held = wanted.get((high, low))
            if held is not None:
                found[held] = LeaseHolder(pid, application or "", address, since)
        return found
