"""Opening SQLite connections the way every SQLite backend needs them (aiosqlite, WAL)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from eventsource.exceptions import EventStoreError

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SYNCHRONOUS_MODES", "open_connection", "synchronous_mode"]

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def synchronous_mode(value: str) -> str:
    """The `PRAGMA synchronous` value, upper-cased; `ValueError` for anything else."""
    mode = value.upper()
    if mode not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {value!r}")
    return mode


def _probe(path: str) -> None:
    sqlite3.connect(path).close()


async def open_connection(
    path: str,
    *,
    busy_timeout: float,
    synchronous: str,
    ddl: Sequence[str] = (),
    what: str = "SQLite store",
) -> aiosqlite.Connection:
    """An autocommit connection in WAL mode, with `ddl` run on it; `EventStoreError` if the
    file cannot be opened."""
    import aiosqlite

    connection: aiosqlite.Connection | None = None
    try:
        # Open once synchronously first: aiosqlite leaves its worker thread behind when the
        # first connect fails, so a bad path is reported from here instead.
        await asyncio.to_thread(_probe, path)
        connection = await aiosqlite.connect(path, isolation_level=None)
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
