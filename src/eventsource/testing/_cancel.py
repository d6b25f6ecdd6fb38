"""Cancelling a call while its I/O is in flight: what the contracts' "a cancelled call leaves
the backend usable" tests share.

A backend that runs one operation as several round trips (BEGIN, statements, COMMIT) and is
cancelled between them can leave its connection inside a transaction: its next call fails,
and on SQLite the file's write lock stays taken, so every other writer of the file times out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["cancel_in_flight"]

_T = TypeVar("_T")

PAUSES = (1, 2, 3, 5)
"""Turns of the event loop after which the contracts cancel a call: its first round trip in
flight, and a few later points."""


async def cancel_in_flight(operation: Awaitable[_T], pauses: int) -> _T | None:
    """Run `operation`, cancel it after `pauses` turns of the event loop and wait until it
    has ended; its result if it finished before that, else None."""
    task = asyncio.ensure_future(operation)
    for _ in range(pauses):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        return await task
    return None
