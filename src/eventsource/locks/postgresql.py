"""`PostgreSQLDistributedLock`: named locks between processes and hosts, by advisory lock.

Two scopes:

- session locks (`acquire`, `try_acquire`): a `pg_advisory_lock` on a connection of its own,
  held until `release()`. If the holder dies or its connection drops, PostgreSQL ends the
  session and with it the lock; the handle reports it (`lost`, `check()`).
- transaction locks (`acquire_in`): a `pg_advisory_xact_lock` in the caller's SQLAlchemy
  transaction, released by its commit or rollback, so the lock covers exactly the writes.

Both scopes use the same key for a name, so they exclude each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from typing import TYPE_CHECKING, Any, Self

from eventsource._internal import postgresql as pg
from eventsource._internal.optional import require
from eventsource.exceptions import LockTimeoutError
from eventsource.locks.interface import DistributedLock, LockHandle

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

__all__ = ["PostgreSQLDistributedLock", "PostgreSQLLockHandle", "lock_key"]

_LOCK_NOT_AVAILABLE = "55P03"
# How long past its own timeout the client waits for the server to answer a lock request
# before it gives the connection up (a network that hangs, not a busy lock).
_GRACE = 5.0
_CHECK_TIMEOUT = 5.0
# Session locks: one statement, in its own implicit transaction, so the `lock_timeout` set
# (local to that transaction) bounds the wait and is gone when the statement ends. Select
# lists are evaluated left to right: the setting is in place when the lock is requested.
_LOCK = "SELECT set_config('lock_timeout', $1, true), pg_advisory_lock($2)"
_TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
_UNLOCK = "SELECT pg_advisory_unlock($1)"
_UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"
# Transaction locks: inside a savepoint (a timeout then rolls back only the savepoint), and
# the caller's `lock_timeout` is put back once the lock is taken.
_XACT_SETTING = "SELECT current_setting('lock_timeout'), set_config('lock_timeout', $1, true)"
_XACT_LOCK = "SELECT pg_advisory_xact_lock($1), set_config('lock_timeout', $2, true)"
_XACT_TRY_LOCK = "SELECT pg_try_advisory_xact_lock($1)"
_IS_LOCKED = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1)"
)


def lock_key(name: str, namespace: str = "") -> int:
    """The signed 64-bit advisory-lock key of a lock name within a namespace.

    The scheme of the subscription leases (`subscriptions.postgresql.lease_key`) with its own
    domain tag, so a lock never collides with the lease of a subscription of the same name.
    """
    digest = hashlib.sha256(f"eventsource-lock\x00{namespace}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _milliseconds(seconds: float | None) -> str:
    """A `lock_timeout` value; PostgreSQL reads 0 as "no limit"."""
    return "0" if seconds is None else f"{max(1, math.ceil(seconds * 1000))}ms"


class PostgreSQLLockHandle(LockHandle):
    """A session advisory lock and the connection that holds it."""

    _owner: PostgreSQLDistributedLock

    def __init__(
        self,
        owner: PostgreSQLDistributedLock,
        name: str,
        key: int,
        connection: AsyncConnection,
        raw: Any,
    ) -> None:
        super().__init__(owner, name)
        self._key = key
        self._connection = connection
        self._raw = raw
        self._lost = False

    @property
    def lost(self) -> bool:
        # asyncpg notices a session ended by the server (or the network) without a query.
        # After the release the connection belongs to the pool, which may close it.
        return self._lost or (not self._released and bool(self._raw.is_closed()))

    async def alive(self) -> bool:
        if not self.held:
            return False
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT):
                await self._raw.fetchval("SELECT 1")
        except Exception:
            self._lost = True
            _terminate(self._raw)
            return False
        return True

    async def _unlock(self) -> None:
        if self._raw.is_closed():
            self._lost = True
            await _close(self._connection, self._raw, broken=True)
            return
        broken = True
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT):
                broken = not await self._raw.fetchval(_UNLOCK, self._key)
        except Exception:
            self._lost = True
        finally:
            # Whatever interrupted the unlock, ending the session gives the lock up.
            await _close(self._connection, self._raw, broken=broken)


class PostgreSQLDistributedLock(DistributedLock):
    """Locks on the database of `engine`.

    Each session lock holds a pooled connection of `engine` while it is held (and while its
    acquisition waits): size the pool for the locks held at once, or give the locks an
    engine of their own (`from_url`). An acquisition's `timeout` bounds the wait for the
    lock; the wait for a pooled connection before it is bounded by the engine's
    `pool_timeout`. Advisory locks are per database, not per schema:
    `namespace` keeps the locks of applications sharing a database apart.
    """

    def __init__(
        self, engine: AsyncEngine | Any, *, namespace: str = "", _owns_engine: bool = False
    ) -> None:
        require("asyncpg", extra="postgresql", feature="PostgreSQLDistributedLock")
        super().__init__()
        self.engine: AsyncEngine = pg.engine_of(engine)
        self.namespace = namespace
        self._owns_engine = _owns_engine

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "", **engine_kwargs: Any) -> Self:
        """Locks with an engine of their own, disposed of by `close()`."""
        require("asyncpg", extra="postgresql", feature="PostgreSQLDistributedLock")
        return cls(pg.create_engine(url, **engine_kwargs), namespace=namespace, _owns_engine=True)

    @classmethod
    def for_store(cls, store: Any) -> Self:
        """Locks on a `PostgreSQLEventStore`'s engine, namespaced by its schema and prefix."""
        return cls(store.engine, namespace=f"{store.schema}.{store.prefix}")

    def key(self, name: str) -> int:
        """The advisory-lock key of `name` in this namespace (to inspect `pg_locks`)."""
        return lock_key(name, self.namespace)

    async def is_locked(self, name: str) -> bool:
        unsigned = self.key(name) & 0xFFFF_FFFF_FFFF_FFFF
        rows = await self._run(
            name, "inspect", _IS_LOCKED, unsigned >> 32, unsigned & 0xFFFF_FFFF, bound=None
        )
        return bool(rows[0][0])

    async def acquire_in(
        self,
        bound: AsyncConnection | AsyncSession,
        name: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - becomes the server's lock_timeout
    ) -> None:
        """Take the lock `name` in the caller's transaction, until its commit or rollback.

        `timeout` as for `acquire`: `LockTimeoutError` when it passes, with nothing held and
        the caller's transaction still usable (the wait ran in a savepoint). A transaction
        lock cannot be released early. Cancelled during the wait, the transaction must be
        rolled back.
        """
        self._check(name)
        key = self.key(name)
        if timeout == 0:
            if not (await self._run(name, "try", _XACT_TRY_LOCK, key, bound=bound))[0][0]:
                raise LockTimeoutError(name, 0)
            return
        connection = await pg.connection_of(bound)
        savepoint = await connection.begin_nested()
        try:
            rows = await self._run(name, "set", _XACT_SETTING, _milliseconds(timeout), bound=bound)
            await self._run(name, "acquire", _XACT_LOCK, key, rows[0][0], bound=bound)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await savepoint.rollback()
            if _lock_timed_out(exc):
                raise LockTimeoutError(name, timeout or 0) from None
            raise
        await savepoint.commit()

    async def _acquire(
        self,
        name: str,
        timeout: float | None,  # noqa: ASYNC109 - the wait limit itself
    ) -> LockHandle:
        key = self.key(name)
        try:
            connection = await self.engine.connect()
        except Exception as exc:
            raise pg.map_error(exc, f"lock {name!r}: connect") from exc
        raw: Any = None
        try:
            raw = (await connection.get_raw_connection()).driver_connection
            if timeout == 0:
                held = bool(await raw.fetchval(_TRY_LOCK, key))
            else:
                async with asyncio.timeout(None if timeout is None else timeout + _GRACE):
                    await raw.execute(_LOCK, _milliseconds(timeout), key)
                held = True
        except BaseException as exc:
            # A refusal (lock_timeout) leaves the session clean. Cancelled or cut off
            # mid-request, the server may still be waiting, and may grant the lock later.
            refused = _lock_timed_out(exc)
            if refused:
                await _close(connection, raw, broken=False)
            else:
                await _abandon(connection, raw)
            if refused or isinstance(exc, TimeoutError):
                raise LockTimeoutError(name, timeout or 0) from None
            if isinstance(exc, Exception) and pg.is_database_error(exc):
                raise pg.map_error(exc, f"lock {name!r}") from exc
            raise
        if not held:
            await _close(connection, raw, broken=False)
            raise LockTimeoutError(name, 0)
        return PostgreSQLLockHandle(self, name, key, connection, raw)

    async def _run(
        self,
        name: str,
        what: str,
        sql: str,
        *args: Any,
        bound: AsyncConnection | AsyncSession | None,
    ) -> list[Any]:
        """One statement in the caller's transaction, or on a pooled connection of ours."""
        if bound is not None:
            return await pg.fetch_in(bound, f"lock {name!r}: {what}", sql, *args)
        try:
            async with self.engine.connect() as connection:
                result = await connection.exec_driver_sql(sql, args)
                return list(result.fetchall())
        except Exception as exc:
            raise pg.map_error(exc, f"lock {name!r}: {what}") from exc

    async def close(self) -> None:
        await super().close()
        if self._owns_engine:
            await self.engine.dispose()


def _lock_timed_out(exc: BaseException) -> bool:
    return getattr(pg.driver_error(exc), "sqlstate", None) == _LOCK_NOT_AVAILABLE


def _terminate(raw: Any) -> None:
    """Close the socket now (synchronous, so a cancellation cannot stop it halfway)."""
    if raw is not None and not raw.is_closed():
        raw.terminate()


async def _abandon(connection: AsyncConnection, raw: Any) -> None:
    """Leave no lock behind after an interrupted lock request.

    Closing the socket is not enough: a backend waiting for a lock does not notice that its
    client left, and would take the lock (briefly) when the holder lets go. asyncpg sends the
    server a cancel request when a query is interrupted, and runs the next statement only once
    that is done; that statement then drops whatever the session was granted meanwhile. A
    session that cannot be cleaned this way is ended.
    """
    if raw is None:
        await _close(connection, raw, broken=True)
        return
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await raw.fetchval(_UNLOCK_ALL)
    except BaseException:
        await _close(connection, raw, broken=True)
        return
    await _close(connection, raw, broken=False)


async def _close(connection: AsyncConnection, raw: Any, *, broken: bool) -> None:
    """Return the connection to the pool, or, if it may hold a lock or is broken, end its
    session and throw it away."""
    if broken:
        _terminate(raw)
        with contextlib.suppress(Exception):
            await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()
