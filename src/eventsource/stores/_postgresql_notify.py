"""Wake-ups for readers of a PostgreSQL store, sent after commit and coalesced.

PostgreSQL takes a global lock on its notification queue when a transaction that ran NOTIFY
commits, and holds it until the commit is flushed: NOTIFYing transactions commit one after
another and cannot share a WAL flush. A NOTIFY in every append statement therefore serialises
all appends of the cluster (at 16 concurrent commands: 0.64x of the same appends without it).
So the store's own appends do not NOTIFY. Once an append has committed, the store asks the
`Notifier` for a wake-up and returns at once:

* readers in this process (`store.listen()` blocks that share the notifier) are signalled
  right away, without a round trip to PostgreSQL;
* other processes get one ``pg_notify`` per flush, sent by a task of the notifier on a pooled
  connection of its own in autocommit. While one is in flight, requests only pile up, so
  under load every flush covers all the appends committed since the previous one (at most one
  NOTIFY in flight per notifier, none while idle). A transaction that only NOTIFYs writes no
  WAL before its commit record, so it is not flushed synchronously: it holds the queue lock
  only briefly and no append waits for it.

The payload lists the aggregate types appended since the previous NOTIFY, one per line (empty
when they do not fit PostgreSQL's 8000 bytes: then "anything"). The library's readers ignore
it (a wake-up only says "read the feed"); it is there for code that LISTENs on the channel.

A NOTIFY that fails (connection lost, server restarting) never fails an append: the notifier
logs it, drops its connection and tries again with backoff, and readers' polling covers the
gap (a lost wake-up only delays). One notifier serves every store of the process with the same
engine and channel (per event loop), counted by its users; the last `release` flushes a
pending wake-up and gives the connection back. The `listen()` of those stores ignores the
notifications this process's notifier sent, since the local signal has already fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from eventsource._internal.postgresql_listen import listening
from eventsource._internal.retry import backoff_delay
from eventsource.stores.interface import AppendSignal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["Notifier", "StoreWakeups"]

logger = logging.getLogger(__name__)

WINDOW = 0.0
"""Seconds a flush waits for more requests before it NOTIFYs (0: as soon as the previous
NOTIFY finished; requests that arrive meanwhile are coalesced anyway)."""
SEND_TIMEOUT = 5.0
"""Seconds a NOTIFY may take before its connection counts as dead (half-open)."""
CLOSE_TIMEOUT = 5.0
"""Seconds `release` waits for the last flush before giving up on it."""
RETRY_BASE = 0.05
RETRY_CAP = 5.0
MAX_PAYLOAD = 7999
"""PostgreSQL refuses payloads of 8000 bytes or more."""
MAX_TYPES = 1000
"""More distinct aggregate types pending than this: the payload says "anything"."""

_NOTIFY_SQL = "SELECT pg_notify($1, $2)"

_Key = tuple[asyncio.AbstractEventLoop, "AsyncEngine", str]
_notifiers: weakref.WeakValueDictionary[_Key, Notifier] = weakref.WeakValueDictionary()


class Notifier:
    """Coalesced NOTIFYs on one channel, sent after commit (see the module docstring)."""

    def __init__(self, key: _Key, what: str) -> None:
        self._key = key
        self._engine = key[1]
        self._channel = key[2]
        self._what = what
        self.signals: set[AppendSignal] = set()
        """Readers in this process, signalled at once by `request`."""
        self.pid: int | None = None
        """The server process id of the notifier's connection (None while it has none)."""
        self.sent = 0
        """NOTIFYs sent so far."""
        self.users = 0
        self._types: set[str] = set()
        self._wanted = False
        self._overflow = False
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        self._connection: AsyncConnection | None = None
        self._raw: Any = None
        self._closed = False

    @classmethod
    def acquire(cls, engine: AsyncEngine, channel: str, what: str) -> Notifier:
        """The notifier of `engine` and `channel` in the running event loop (made on first
        use), with one more user; each `acquire` needs its `release`."""
        key: _Key = (asyncio.get_running_loop(), engine, channel)
        notifier = _notifiers.get(key)
        if notifier is None or notifier._closed:
            notifier = _notifiers[key] = cls(key, what)
        notifier.users += 1
        return notifier

    async def release(self) -> None:
        """One user fewer; the last one flushes a pending wake-up and closes the notifier."""
        self.users -= 1
        if self.users > 0 or self._closed:
            return
        self._closed = True
        if _notifiers.get(self._key) is self:
            del _notifiers[self._key]
        task = self._task
        graceful = self._failures == 0
        if task is not None:
            try:
                if graceful:  # flushing: give the last NOTIFY a moment to go out
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(CLOSE_TIMEOUT):
                            await asyncio.shield(task)
            finally:
                if not task.done():  # failing (backing off) or too slow: the readers poll
                    graceful = False
                    task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._disconnect(graceful=graceful and self._failures == 0)

    def request(self, aggregate_type: str) -> None:
        """An append of `aggregate_type` committed: signal local readers now, and NOTIFY
        other processes soon. Never blocks, never raises."""
        for signal in tuple(self.signals):
            signal.notify()
        if self._closed:
            return
        self._wanted = True
        if not self._overflow:
            self._types.add(aggregate_type)
            if len(self._types) > MAX_TYPES:  # would not fit a payload anyway: "anything"
                self._types, self._overflow = set(), True
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._flush(), name=f"{self._what}: NOTIFY {self._channel}"
            )

    async def _flush(self) -> None:
        """NOTIFY until no request is pending, one at a time; on failure back off and retry
        (stops when the notifier is closed)."""
        try:
            while self._wanted:
                if WINDOW > 0:
                    await asyncio.sleep(WINDOW)
                try:
                    await self._send()
                except Exception as exc:  # never reaches an append: log, retry, readers poll
                    self._failures += 1
                    if self._failures == 1:
                        logger.warning(
                            "%s: NOTIFY on %r failed, readers poll until it is back: %s",
                            self._what,
                            self._channel,
                            exc,
                        )
                    await self._disconnect(graceful=False)
                    if self._closed:
                        return
                    delay = backoff_delay(min(self._failures, 32), base=RETRY_BASE, cap=RETRY_CAP)
                    await asyncio.sleep(delay)
                    continue
                if self._failures:
                    logger.info("%s: NOTIFY works again (%d failures)", self._what, self._failures)
                    self._failures = 0
        finally:
            self._task = None

    async def _send(self) -> None:
        """One NOTIFY of everything requested so far (taken once the connection is there,
        so requests made while connecting ride along; put back when the NOTIFY fails)."""
        async with asyncio.timeout(SEND_TIMEOUT):
            if self._raw is not None and self._raw.is_closed():  # died while idle
                await self._disconnect(graceful=False)
            if self._raw is None:
                await self._connect()
            types, overflow = self._types, self._overflow
            self._types, self._wanted, self._overflow = set(), False, False
            try:
                await self._raw.execute(_NOTIFY_SQL, self._channel, _payload(types, overflow))
            except BaseException:
                self._types |= types
                self._wanted = True
                self._overflow |= overflow
                raise
        self.sent += 1

    async def _connect(self) -> None:
        connection = await self._engine.connect()
        try:
            raw: Any = (await connection.get_raw_connection()).driver_connection
        except BaseException:
            await _throw_away(connection)
            raise
        self._connection, self._raw = connection, raw
        self.pid = raw.get_server_pid()

    async def _disconnect(self, *, graceful: bool) -> None:
        """Give the connection back to the pool (graceful) or throw it away (after a failure
        or a cancelled NOTIFY: never reused)."""
        connection, raw = self._connection, self._raw
        self._connection = self._raw = None
        self.pid = None
        if connection is None:
            return
        if graceful and not raw.is_closed() and not raw.is_in_transaction():
            with contextlib.suppress(Exception):
                await connection.close()
                return
        with contextlib.suppress(Exception):
            raw.terminate()
        await _throw_away(connection)


def _payload(types: set[str], overflow: bool) -> str:
    """The aggregate types, one per line; empty ("anything") when they do not fit."""
    payload = "" if overflow else "\n".join(sorted(types))
    return payload if len(payload.encode("utf-8", "surrogatepass")) <= MAX_PAYLOAD else ""


async def _throw_away(connection: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()


class StoreWakeups:
    """What one store holds of the wake-up machinery: its use of the shared `Notifier`
    (taken on the first append, released by `close`) and its `listen`."""

    def __init__(self, engine: AsyncEngine, channel: str, what: str) -> None:
        self._engine = engine
        self._channel = channel
        self._what = what
        self._notifier: Notifier | None = None
        self._closed = False

    def appended(self, aggregate_type: str) -> None:
        """After an append of the store's own committed (in the event loop)."""
        notifier = self._notifier
        if notifier is None:
            if self._closed:
                return
            notifier = self._notifier = Notifier.acquire(self._engine, self._channel, self._what)
        notifier.request(aggregate_type)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[AppendSignal]:
        """Signals for appends of this process's stores on the engine and channel (at once)
        and for NOTIFYs of everyone else (LISTEN, re-established when its session dies)."""
        signal = AppendSignal()
        notifier = Notifier.acquire(self._engine, self._channel, self._what)

        def notified(*args: object) -> None:
            # (connection, pid, channel, payload) from asyncpg; no arguments after a
            # reconnection. Our own notifier's NOTIFYs were signalled locally already.
            if len(args) < 2 or args[1] != notifier.pid:
                signal.notify()

        notifier.signals.add(signal)
        try:
            async with listening(self._engine, self._channel, notified, f"{self._what}: listen"):
                yield signal
        finally:
            notifier.signals.discard(signal)
            await notifier.release()

    async def close(self) -> None:
        """Release the notifier (the last store to do so flushes and closes it)."""
        notifier, self._notifier = self._notifier, None
        self._closed = True
        if notifier is not None:
            await notifier.release()
