"""`InMemoryDistributedLock`: named locks between the tasks of one event loop.

For tests and single-process applications. Waiters are served first come, first served: a
release hands the lock straight to the oldest waiter, so a task that keeps re-acquiring
cannot starve the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from eventsource.exceptions import LockTimeoutError
from eventsource.locks.interface import DistributedLock, LockHandle

__all__ = ["InMemoryDistributedLock", "InMemoryLockHandle"]


class InMemoryLockHandle(LockHandle):
    """A lock held within this process; it cannot be lost, only released."""

    _owner: InMemoryDistributedLock

    @property
    def lost(self) -> bool:
        return False

    async def alive(self) -> bool:
        return self.held

    async def _unlock(self) -> None:
        self._owner._hand_over(self.name)


@dataclass(slots=True)
class _Slot:
    holder: InMemoryLockHandle | None = None
    waiters: deque[tuple[asyncio.Future[None], InMemoryLockHandle]] = field(default_factory=deque)


class InMemoryDistributedLock(DistributedLock):
    """Locks shared by everything holding this instance (not by other instances)."""

    def __init__(self) -> None:
        super().__init__()
        self._slots: dict[str, _Slot] = {}

    async def is_locked(self, name: str) -> bool:
        slot = self._slots.get(name)
        return slot is not None and slot.holder is not None

    async def _acquire(
        self,
        name: str,
        timeout: float | None,  # noqa: ASYNC109 - the wait limit itself
    ) -> LockHandle:
        slot = self._slots.setdefault(name, _Slot())
        handle = InMemoryLockHandle(self, name)
        if slot.holder is None and not slot.waiters:
            slot.holder = handle
            return handle
        if timeout == 0:
            raise LockTimeoutError(name, 0)
        entry = (asyncio.get_running_loop().create_future(), handle)
        slot.waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await entry[0]
        except BaseException as exc:
            self._abandon(name, slot, entry)
            if isinstance(exc, TimeoutError):
                raise LockTimeoutError(name, timeout or 0) from None
            raise
        return handle

    def _abandon(
        self,
        name: str,
        slot: _Slot,
        entry: tuple[asyncio.Future[None], InMemoryLockHandle],
    ) -> None:
        """A waiter gave up (timeout or cancellation). If the lock was handed to it in the
        meantime, pass it on, so that no lock stays with a caller that never received it."""
        future, handle = entry
        if slot.holder is handle:
            self._hand_over(name)
            return
        future.cancel()
        if entry in slot.waiters:
            slot.waiters.remove(entry)
        if slot.holder is None and not slot.waiters:
            self._slots.pop(name, None)

    def _hand_over(self, name: str) -> None:
        """Give the lock `name` to its oldest waiter still waiting, or free it."""
        slot = self._slots.get(name)
        if slot is None:
            return
        slot.holder = None
        while slot.waiters:
            future, handle = slot.waiters.popleft()
            if not future.done():
                slot.holder = handle
                future.set_result(None)
                return
        del self._slots[name]
