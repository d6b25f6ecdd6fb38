"""Opening SQLite connections the way every SQLite backend needs them (aiosqlite, WAL).

aiosqlite runs each connection on a worker thread that is not a daemon and that its
garbage-collection hook stops with a future of whatever event loop is current. So an unclosed
connection kept the process alive when an exception escaped `asyncio.run` (the traceback
holds it), and one collected after `asyncio.run` printed an "Event loop is closed" traceback
from the worker. Connections opened here use a daemon worker and, when collected unclosed,
warn (`ResourceWarning` naming their owner) and stop their worker without any event loop.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import sqlite3
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from eventsource.exceptions import EventStoreError, TransientStoreError

if TYPE_CHECKING:
    import aiosqlite

__all__ = [
    "SYNCHRONOUS_MODES",
    "FileLock",
    "OwnConnection",
    "begin_immediate",
    "changed_rows",
    "execute_many",
    "fetch_all",
    "file_lock",
    "open_connection",
    "run_on",
    "store_error",
    "synchronous_mode",
    "transaction",
]

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def store_error(message: str, exc: sqlite3.Error) -> EventStoreError:
    """The library's error for a failed SQLite statement: `TransientStoreError` when another
    connection held the file's lock past the busy timeout (trying again later can succeed;
    subscriptions back off and retry it), `EventStoreError` otherwise."""
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return TransientStoreError(f"{message} (the file stayed locked by another writer)")
    return EventStoreError(message)


def synchronous_mode(value: str) -> str:
    """The `PRAGMA synchronous` value, upper-cased; `ValueError` for anything else."""
    mode = value.upper()
    if mode not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {value!r}")
    return mode


@functools.cache
def _connection_class() -> Callable[[Callable[[], sqlite3.Connection], str], aiosqlite.Connection]:
    import aiosqlite
    from aiosqlite.core import _STOP_RUNNING_SENTINEL

    class OwnedConnection(aiosqlite.Connection):
        """An aiosqlite connection that never holds the process up nor prints at exit."""

        def __init__(self, connector: Callable[[], sqlite3.Connection], owner: str) -> None:
            super().__init__(connector, 64)
            self.owner = owner
            self._thread.daemon = True

        def __del__(self) -> None:
            raw = self._connection
            if raw is None:
                return
            warnings.warn(
                f"{self.owner} was not closed: close it with `await ....close()` or use it "
                "as `async with ...:` (its SQLite connection is closed now, late)",
                ResourceWarning,
                stacklevel=2,
            )
            self._connection = None
            self._running = False

            def close_and_stop() -> object:
                raw.close()
                return _STOP_RUNNING_SENTINEL

            # No future: the loop that would receive its result may be closed already.
            self._tx.put_nowait((None, close_and_stop))

    return OwnedConnection


def _probe(path: str) -> None:
    sqlite3.connect(path).close()


async def open_connection(
    path: str,
    *,
    busy_timeout: float,
    synchronous: str,
    ddl: Sequence[str] = (),
    what: str = "SQLite store",
    owner: str | None = None,
) -> aiosqlite.Connection:
    """An autocommit connection in WAL mode, with `ddl` run on it; `EventStoreError` if the
    file cannot be opened. `owner` names the object holding it in the `ResourceWarning` of a
    connection never closed (default: `what` and the path)."""
    connection: aiosqlite.Connection | None = None
    try:
        # Open once synchronously first: aiosqlite leaves its worker thread behind when the
        # first connect fails, so a bad path is reported from here instead.
        await asyncio.to_thread(_probe, path)
        connection = await _connection_class()(
            functools.partial(sqlite3.connect, path, isolation_level=None),
            owner or f"{what} {path!r}",
        )
        await connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        setup = ["PRAGMA journal_mode = WAL", f"PRAGMA synchronous = {synchronous}", *ddl]
        deadline = time.monotonic() + busy_timeout
        for statement in setup:
            while True:
                try:
                    await connection.execute(statement)
                    break
                except sqlite3.OperationalError as exc:
                    # Switching a new file to WAL takes an exclusive lock without waiting on
                    # the busy timeout, so connections opening a file together can collide.
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.01)
    except sqlite3.Error as exc:
        if connection is not None:
            await connection.close()
        raise EventStoreError(
            f"cannot open {what} {path!r}: {exc} (check that the directory exists and is "
            "writable, and that the file is an SQLite database)"
        ) from exc
    return connection


_T = TypeVar("_T")


async def run_on(
    connection: aiosqlite.Connection, function: Callable[..., _T], *args: object
) -> _T:
    """`function(raw_connection, *args)` run on the connection's worker thread: one thread
    hop for a whole operation (a transaction, a page of rows) instead of one per statement
    and per fetch, which is what aiosqlite's own methods cost."""
    raw = connection._conn  # raises ValueError once the connection is closed
    result: _T = await connection._execute(function, raw, *args)  # type: ignore[no-untyped-call]
    return result


_BUSY_SLEEPS = (0.0002, 0.0005, 0.001, 0.002)
"""Our own pauses between attempts at the write lock, shortest first, then the last one
again: short enough to take the lock in the gap between another writer's COMMIT and its next
BEGIN (SQLite's own busy handler sleeps 1, 2, 5, 10 ... 100 ms, so a waiter falls behind a
writer that comes back at once, and one process starves the other)."""


class FileLock:
    """The write lock of one database file among the connections of this process.

    SQLite's lock is shared by processes; inside one process, writers of the same file
    (several stores, each with its own connection and worker thread) queue here instead, so
    a writer waits without polling the file and takes the lock the moment the previous one
    commits. Only the thread that got this lock asks SQLite for its lock."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, timeout: float) -> None:
        """Wait up to `timeout` seconds; then `sqlite3.OperationalError` ("database is
        locked"), the error SQLite gives when its own lock stays taken."""
        if not self._lock.acquire(timeout=max(timeout, 0.0)):
            raise sqlite3.OperationalError("database is locked (by a writer of this process)")

    def release(self) -> None:
        self._lock.release()


_FILE_LOCKS: weakref.WeakValueDictionary[str, FileLock] = weakref.WeakValueDictionary()
_FILE_LOCKS_GUARD = threading.Lock()


def _new_locks_after_fork() -> None:
    """A forked child starts with no file locks: one that a writer thread of the parent
    held at the fork would stay taken in the child forever (that thread is not copied)."""
    global _FILE_LOCKS_GUARD
    _FILE_LOCKS_GUARD = threading.Lock()
    _FILE_LOCKS.clear()


os.register_at_fork(after_in_child=_new_locks_after_fork)


def file_lock(path: str) -> FileLock | None:
    """The `FileLock` of the database file at `path` (one per file while any holder keeps
    it), or None for a private in-memory database."""
    if path == ":memory:" or path == "":
        return None
    key = os.path.realpath(path)
    with _FILE_LOCKS_GUARD:
        lock = _FILE_LOCKS.get(key)
        if lock is None:
            lock = _FILE_LOCKS[key] = FileLock()
        return lock


def begin_immediate(conn: sqlite3.Connection, timeout: float) -> None:
    """`BEGIN IMMEDIATE` on a connection whose `busy_timeout` is 0, retried with short
    pauses of our own (`_BUSY_SLEEPS`, jittered) until `timeout` seconds have passed; then
    the `sqlite3.OperationalError` ("database is locked") of the last attempt is raised.
    (Writers of one process queue on their `FileLock` first: only writers in other processes
    meet here.)"""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                raise
        pause = _BUSY_SLEEPS[min(attempt, len(_BUSY_SLEEPS) - 1)]
        time.sleep(pause * (0.5 + random.random()))
        attempt += 1


# -- connections of the repositories (outbox, inbox, checkpoints, DLQ, snapshots, read models) --


def fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of one statement (none for a write without RETURNING), the statement
    finished (its cursor closed) before the hop ends: no read transaction stays open on the
    connection for the next caller's statement to share."""
    cursor = conn.execute(sql, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()


def changed_rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    """The number of rows one write statement changed."""
    cursor = conn.execute(sql, params)
    try:
        return int(cursor.rowcount)
    finally:
        cursor.close()


def transaction(
    conn: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[list[Any]]:
    """`statements` in one `BEGIN IMMEDIATE` transaction, committed or rolled back before
    the hop ends; the rows of each."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = [fetch_all(conn, sql, params) for sql, params in statements]
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def execute_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """`sql` for every row of `rows`, in one `BEGIN IMMEDIATE` transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class OwnConnection:
    """A repository's connection of its own to an SQLite file, opened on first use (with
    `ddl` run and `prepare(raw_connection)` run on its thread, e.g. to upgrade an older table).

    Every operation is one function run whole on the connection's thread (`run`, with the
    module's `fetch_all`, `changed_rows`, `transaction`, `execute_many`). Operations made of
    several aiosqlite calls (BEGIN, statements, COMMIT) were unsafe to cancel: a call
    cancelled between them left the connection inside its transaction, so the repository's
    next call failed and the file's write lock stayed taken for every other writer. Run in
    one hop, a cancelled call still ends its transaction on the thread."""

    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float,
        synchronous: str,
        ddl: Sequence[str],
        what: str,
        where: str,
        prepare: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous_mode(synchronous)
        self._ddl = ddl
        self._what = what
        self._where = where
        self._prepare = prepare
        self._connection: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> aiosqlite.Connection:
        connection = self._connection
        if connection is not None:
            return connection
        async with self._lock:
            if self._connection is None:
                opened = await open_connection(
                    self.path,
                    busy_timeout=self._busy_timeout,
                    synchronous=self._synchronous,
                    ddl=self._ddl,
                    what=self._what,
                )
                if self._prepare is not None:
                    try:
                        await run_on(opened, self._prepare)
                    except BaseException:
                        await opened.close()
                        raise
                self._connection = opened
            return self._connection

    async def run(self, what: str, function: Callable[..., _T], *args: object) -> _T:
        """`function(raw_connection, *args)` on the connection's thread; an sqlite3 error
        becomes the library's (`store_error`), naming the repository and `what` it did."""
        try:
            return await run_on(await self._connected(), function, *args)
        except sqlite3.Error as exc:
            raise store_error(f"{self._where}: {what}: {exc}", exc) from exc

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
