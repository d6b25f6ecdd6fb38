"""`PostgreSQLLeases`: one process at a time runs a subscription, by PostgreSQL advisory lock.

A lease is a session-level advisory lock held on a connection of its own. When the holder
dies, PostgreSQL drops its session and with it the lock, and a standby process takes over from
the last saved checkpoint. No heartbeat table, no clock: the database's own session liveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import TYPE_CHECKING, Any

from eventsource._internal import postgresql as pg
from eventsource._internal.optional import require

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["PostgreSQLLease", "PostgreSQLLeases", "lease_key"]

_ALIVE_TIMEOUT = 5.0


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
