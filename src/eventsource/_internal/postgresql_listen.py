"""A LISTEN that outlives its connection: detected dead, re-established, consumers woken.

A listening session can die without a word to its reader: terminated by an administrator, a
server restart, a failover, or a half-open TCP connection that never reports. Notifications
then simply stop, and readers fall back to their poll interval for good. `listening` keeps
one LISTEN alive for the duration of a block: asyncpg's termination listener reports a closed
connection at once, a cheap `SELECT 1` every `check_interval` seconds (bounded by `timeout`)
catches the half-open ones, and a dead session is replaced with exponential, capped, jittered
backoff until the database answers again. After each re-LISTEN the reader is signalled once,
since appends made while nobody listened were never notified.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from eventsource._internal import postgresql as pg
from eventsource._internal.retry import backoff_delay

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["listening"]

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 5.0
"""Seconds between liveness checks of an idle listening connection."""
CHECK_TIMEOUT = 5.0
"""Seconds a liveness check may take before the connection counts as dead (half-open)."""
RETRY_BASE = 0.05
RETRY_CAP = 5.0


@contextlib.asynccontextmanager
async def listening(
    engine: AsyncEngine,
    channel: str,
    notify: Callable[..., object],
    what: str,
    *,
    check_interval: float = CHECK_INTERVAL,
    timeout: float = CHECK_TIMEOUT,  # noqa: ASYNC109 - bounds each liveness check
) -> AsyncIterator[None]:
    """LISTEN on `channel` with a connection of `engine` for the block, calling `notify` for
    every notification and once after each reconnection. The first LISTEN raises a typed
    error (`pg.map_error`, naming `what`) when it fails; later failures are retried until the
    block ends."""
    session = _Session(engine, channel, notify, what, check_interval, timeout)
    await session.open()
    keeper = asyncio.create_task(session.keep_alive(), name=f"{what}: keep LISTEN alive")
    try:
        yield
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await session.close()


class _Session:
    def __init__(
        self,
        engine: AsyncEngine,
        channel: str,
        notify: Callable[..., object],
        what: str,
        check_interval: float,
        timeout: float,
    ) -> None:
        self._engine = engine
        self._channel = channel
        self._notify = notify
        self._what = what
        self._check_interval = check_interval
        self._timeout = timeout
        self._connection: AsyncConnection | None = None
        self._raw: Any = None
        self._ended = asyncio.Event()

    async def open(self) -> None:
        """LISTEN on a new connection; typed errors."""
        self._ended = asyncio.Event()
        try:
            connection = await self._engine.connect()
        except Exception as exc:
            raise pg.map_error(exc, self._what) from exc
        try:
            raw: Any = (await connection.get_raw_connection()).driver_connection
            raw.add_termination_listener(self._terminated)
            await raw.add_listener(self._channel, self._notify)
        except BaseException as exc:  # cancelled too: the connection must go back
            with contextlib.suppress(Exception):
                await connection.invalidate()
            with contextlib.suppress(Exception):
                await connection.close()
            if not isinstance(exc, Exception):
                raise
            raise pg.map_error(exc, self._what) from exc
        self._connection, self._raw = connection, raw

    def _terminated(self, _connection: object) -> None:
        self._ended.set()

    async def keep_alive(self) -> None:
        """Until cancelled: wait for the session to die, then listen again and signal."""
        while True:
            await self._until_dead()
            await self._discard()
            await self._reopen()
            self._notify()

    async def _until_dead(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._check_interval):
                    await self._ended.wait()
                return
            except TimeoutError:
                pass
            if not await self._alive():
                return

    async def _alive(self) -> bool:
        raw = self._raw
        if raw is None or raw.is_closed():
            return False
        try:
            async with asyncio.timeout(self._timeout):
                await raw.fetchval("SELECT 1")
        except Exception:
            return False
        return True

    async def _reopen(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.open()
            except Exception as exc:
                if attempt == 1:
                    logger.warning("%s: LISTEN lost, reconnecting: %s", self._what, exc)
                await asyncio.sleep(backoff_delay(min(attempt, 32), base=RETRY_BASE, cap=RETRY_CAP))
                continue
            logger.info("%s: listening again after %d attempts", self._what, attempt)
            return

    async def _discard(self) -> None:
        """Drop a dead session's connection; never reused."""
        connection, raw = self._connection, self._raw
        self._connection = self._raw = None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.remove_termination_listener(self._terminated)
                raw.terminate()  # at once: a half-open connection would not answer a goodbye
        if connection is not None:
            await _throw_away(connection)

    async def close(self) -> None:
        """UNLISTEN and give the connection back (thrown away when that fails)."""
        connection, raw = self._connection, self._raw
        self._connection = self._raw = None
        if connection is None:
            return
        try:
            raw.remove_termination_listener(self._terminated)
            async with asyncio.timeout(self._timeout):
                await raw.remove_listener(self._channel, self._notify)
        except Exception:  # broken, or still listening: never reuse it
            with contextlib.suppress(Exception):
                raw.terminate()
            await _throw_away(connection)
            return
        with contextlib.suppress(Exception):
            await connection.close()


async def _throw_away(connection: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()
