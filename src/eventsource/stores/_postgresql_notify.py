"""Wake-ups for readers of a PostgreSQL store, sent after commit and coalesced.

PostgreSQL takes a global lock on its notification queue when a transaction that ran NOTIFY
commits, and holds it until the commit is flushed: NOTIFYing transactions commit one after
another and cannot share a WAL flush. A NOTIFY in every append statement therefore serialises
all appends of the cluster (16 concurrent commands ran at 0.64x of the minimal design with
it, 0.95x without). So the store's own appends do not NOTIFY. Once an append has committed,
the store asks the `Notifier` for a wake-up and returns at once:

* readers in this process (`store.listen()` blocks that share the notifier) are signalled
  right away, without a round trip to PostgreSQL;
* other processes get a ``pg_notify``, sent by a task of the notifier on a pooled connection
  of its own in autocommit, as soon as the loop runs it. The notifier has `SENDERS` (2) such
  connections, each with at most one NOTIFY in flight; requests made while both are busy
  pile up and the first to finish sends one NOTIFY for all of them. So under load one NOTIFY
  covers several appends (0.3-0.4 NOTIFYs per append at 16 concurrent commands), and a
  request waits for the sooner of two round trips, not for one that began just before it
  (a busy event loop stretches round trips; one connection gave a p99 wake-up latency of
  13 ms where two gave 11 ms, in the same run). None is sent while idle.
* NOTIFYs start at least `MIN_INTERVAL` (5 ms) apart: the first after a quiet spell goes at
  once, requests made within 5 ms of the previous NOTIFY wait for the rest of that interval
  and share one. Measured as CPU time per append (benchmarks/postgresql_cpu.py), a NOTIFY
  per append cost about as much as a fifth of the append itself (client and server: a
  round trip, a transaction, the signals to listening backends) when appends come one at a
  time, a few milliseconds apart, where nothing coalesced them before; this halves their
  number there. It adds at most 5 ms to a wake-up in a burst (an earlier measurement at 16
  concurrent commands: about 2 ms to the p50 and p99, and 8% more throughput).
  A transaction that only NOTIFYs writes no WAL before its commit record, so PostgreSQL does
  not wait for a flush to commit it: it holds the queue lock only briefly, and no append
  waits for it.

The payload lists the aggregate types appended since the previous NOTIFY, one per line (empty
when they do not fit PostgreSQL's 8000 bytes: then "anything"). The library's readers ignore
it (a wake-up only says "read the feed"); it is there for code that LISTENs on the channel.

A NOTIFY that fails (connection lost, server restarting) never fails an append: the notifier
logs it, drops that connection and tries again with backoff, and readers' polling covers the
gap (a lost wake-up only delays). One notifier serves every store of the process with the same
engine and channel (per event loop), counted by its users; the last `release` flushes a
pending wake-up and gives the connections back. The `listen()` of those stores ignores the
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

SENDERS = 2
"""Connections a notifier NOTIFYs on, each with at most one NOTIFY in flight. A request made
while every one is in flight waits for the first to finish (and rides along with the others
made meanwhile)."""
MIN_INTERVAL = 0.005
"""Seconds between the starts of two NOTIFYs of a notifier (requests meanwhile share one)."""
SEND_TIMEOUT = 5.0
"""Seconds a NOTIFY may take before its connection counts as dead (half-open)."""
CLOSE_TIMEOUT = 5.0
"""Seconds `release` waits for the last NOTIFYs before giving up on them."""
RETRY_BASE = 0.05
RETRY_CAP = 5.0
MAX_PAYLOAD = 7999
"""PostgreSQL refuses payloads of 8000 bytes or more."""
MAX_TYPES = 1000
"""More distinct aggregate types pending than this: the payload says "anything"."""

_NOTIFY_SQL = "SELECT pg_notify($1, $2)"

_Key = tuple[asyncio.AbstractEventLoop, "AsyncEngine", str]
_notifiers: weakref.WeakValueDictionary[_Key, Notifier] = weakref.WeakValueDictionary()


class _Sender:
    """One connection of a notifier and the task NOTIFYing on it (None while idle)."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.connection: AsyncConnection | None = None
        self.raw: Any = None
        self.pid: int | None = None
        self.failures = 0


class Notifier:
    """Coalesced NOTIFYs on one channel, sent after commit (see the module docstring)."""

    def __init__(self, key: _Key, what: str) -> None:
        self._key = key
        self.loop = key[0]
        self._engine = key[1]
        self._channel = key[2]
        self._what = what
        self.signals: set[AppendSignal] = set()
        """Readers in this process, signalled at once by `request`."""
        self.sent = 0
        """NOTIFYs sent so far."""
        self.users = 0
        self._senders = [_Sender() for _ in range(SENDERS)]
        self._types: set[str] = set()
        self._wanted = False  # a request not yet taken by a sender
        self._armed = False  # a sender will take it without being started
        self._overflow = False
        self._failing = False
        self._closed = False
        self._next_at = 0.0  # loop time before which no NOTIFY starts (`MIN_INTERVAL`)

    @property
    def pids(self) -> frozenset[int]:
        """The server process ids of the notifier's connections (what its NOTIFYs carry)."""
        return frozenset(s.pid for s in self._senders if s.pid is not None)

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
        """One user fewer; the last one sends a pending wake-up and closes the notifier."""
        self.users -= 1
        if self.users > 0 or self._closed:
            return
        self._closed = True
        if _notifiers.get(self._key) is self:
            del _notifiers[self._key]
        tasks = [s.task for s in self._senders if s.task is not None]
        stopped: set[_Sender] = set()
        try:
            if tasks and not self._failing:  # give the last NOTIFYs a moment to go out
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT):
                        await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
        finally:
            for sender in self._senders:
                if sender.task is not None:  # failing (backing off) or too slow: readers poll
                    stopped.add(sender)
                    sender.task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sender in self._senders:
                await self._disconnect(sender, graceful=sender not in stopped)

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
        if not self._armed:
            self._start()

    def _start(self) -> None:
        """Start an idle sender, if there is one, to take the pending request."""
        for sender in self._senders:
            if sender.task is None:
                self._armed = True
                sender.task = self.loop.create_task(
                    self._run(sender), name=f"{self._what}: NOTIFY {self._channel}"
                )
                return

    async def _run(self, sender: _Sender) -> None:
        """NOTIFY on `sender` until no request is pending; after a failure back off and
        retry (until the notifier is closed)."""
        try:
            while self._wanted:
                try:
                    await self._send(sender)
                except Exception as exc:  # never reaches an append: log, retry, readers poll
                    self._armed = False
                    sender.failures += 1
                    if not self._failing:
                        self._failing = True
                        logger.warning(
                            "%s: NOTIFY on %r failed, readers poll until it works again: %s",
                            self._what,
                            self._channel,
                            exc,
                        )
                    await self._disconnect(sender, graceful=False)
                    if self._closed:
                        return
                    attempt = min(sender.failures, 32)
                    await asyncio.sleep(backoff_delay(attempt, base=RETRY_BASE, cap=RETRY_CAP))
                    continue
                sender.failures = 0
                if self._failing:
                    self._failing = False
                    logger.info("%s: NOTIFY on %r works again", self._what, self._channel)
        finally:
            sender.task = None

    async def _send(self, sender: _Sender) -> None:
        """One NOTIFY of everything requested so far (taken once the connection is there,
        so requests made while connecting ride along; put back when the NOTIFY fails)."""
        self._armed = True  # this sender takes what comes until then
        pause = self._next_at - self.loop.time()
        if pause > 0:  # requests made meanwhile ride along
            await asyncio.sleep(pause)
        async with asyncio.timeout(SEND_TIMEOUT):
            if sender.raw is not None and sender.raw.is_closed():  # died while idle
                await self._disconnect(sender, graceful=False)
            if sender.raw is None:
                await self._connect(sender)
            if not self._wanted:  # another sender took it while this one connected
                return
            types, overflow = self._types, self._overflow
            self._types, self._wanted, self._overflow, self._armed = set(), False, False, False
            self._next_at = self.loop.time() + MIN_INTERVAL
            try:
                await sender.raw.execute(_NOTIFY_SQL, self._channel, _payload(types, overflow))
            except BaseException:
                self._types |= types
                self._wanted = True
                self._overflow |= overflow
                raise
        self.sent += 1

    async def _connect(self, sender: _Sender) -> None:
        connection = await self._engine.connect()
        try:
            raw: Any = (await connection.get_raw_connection()).driver_connection
        except BaseException:
            await _throw_away(connection)
            raise
        sender.connection, sender.raw, sender.pid = connection, raw, raw.get_server_pid()

    async def _disconnect(self, sender: _Sender, *, graceful: bool) -> None:
        """Give the connection back to the pool (graceful, when it is idle and sound) or
        throw it away (after a failure or a cancelled NOTIFY: never reused)."""
        connection, raw = sender.connection, sender.raw
        sender.connection = sender.raw = sender.pid = None
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
        if notifier is None or notifier.loop is not asyncio.get_running_loop():
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
            if len(args) < 2 or args[1] not in notifier.pids:
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
