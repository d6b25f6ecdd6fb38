"""The `DistributedLock` contract: named mutual exclusion between tasks, processes and hosts.

A lock is taken by name (`acquire`, waiting up to a timeout, or `try_acquire`, never waiting)
and gives back a `LockHandle`, which releases it (`release()` or the end of an `async with`
block). Locks are not reentrant: a second acquisition of a held name waits for the release
like any other, even in the task holding it, so code that already holds a lock passes the
handle on instead of acquiring the name again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from types import TracebackType
from typing import Any, Self

from eventsource._internal.closing import AsyncClosing
from eventsource.exceptions import LockError, LockLostError, LockTimeoutError

__all__ = [
    "DistributedLock",
    "LockAcquisition",
    "LockHandle",
]


class LockHandle(ABC):
    """One holding of a named lock, released by `release()` or at the end of `async with`.

    An `async with` block whose lock was lost ends with `LockLostError` (unless the block
    raised already), so work done believing it exclusive is not accepted silently.
    """

    def __init__(self, owner: DistributedLock, name: str) -> None:
        self.name = name
        self._owner = owner
        self._released = False

    @property
    @abstractmethod
    def lost(self) -> bool:
        """True once the lock is known to be gone without a release (no round trip)."""

    @property
    def held(self) -> bool:
        """Neither released nor known to be lost (no round trip; `alive()` asks the server)."""
        return not self._released and not self.lost

    @abstractmethod
    async def alive(self) -> bool:
        """Whether the lock is still held, checked with its backend (one round trip)."""

    @abstractmethod
    async def _unlock(self) -> None:
        """Give the lock up; a backend that finds it lost on the way sets `lost`."""

    async def check(self) -> None:
        """Raise `LockLostError` unless the lock is still held (one round trip)."""
        if not await self.alive():
            raise LockLostError(self.name)

    async def release(self) -> None:
        """Give the lock up; the next waiter gets it. Releasing twice does nothing."""
        if self._released:
            return
        self._released = True
        try:
            await self._unlock()
        finally:
            self._owner._forget(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()
        if exc_type is None and self.lost:
            raise LockLostError(self.name)


class LockAcquisition:
    """What `DistributedLock.acquire` returns: await it for a handle, or use it in
    `async with`, which releases the lock when the block ends."""

    def __init__(self, lock: DistributedLock, name: str, timeout: float | None) -> None:
        self._lock = lock
        self._name = name
        self._timeout = timeout
        self._handle: LockHandle | None = None

    def __await__(self) -> Generator[Any, None, LockHandle]:
        return self._lock._take(self._name, self._timeout).__await__()

    async def __aenter__(self) -> LockHandle:
        self._handle = await self._lock._take(self._name, self._timeout)
        return self._handle

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._handle is not None
        await self._handle.__aexit__(exc_type, exc, tb)


class DistributedLock(AsyncClosing, ABC):
    """Named locks; every backend passes `eventsource.testing.DistributedLockContract`.

    `close()` releases the locks this instance still holds and refuses new acquisitions.
    """

    def __init__(self) -> None:
        self._held: set[LockHandle] = set()
        self._closed = False

    def acquire(self, name: str, *, timeout: float | None = None) -> LockAcquisition:
        """Take the lock `name`, waiting for its holder to release it.

        `timeout` (seconds) bounds the wait: `LockTimeoutError` when it passes, and nothing is
        held then. `None` waits as long as it takes; `0` tries once. Use it as
        `async with locks.acquire(name, timeout=5):` or `handle = await locks.acquire(name)`.
        """
        self._check(name)
        if timeout is not None and timeout < 0:
            raise ValueError(f"the timeout of lock {name!r} must be >= 0 or None, got {timeout}")
        return LockAcquisition(self, name, timeout)

    async def try_acquire(self, name: str) -> LockHandle | None:
        """The lock `name` if nobody holds it, else None (never waits)."""
        self._check(name)
        try:
            return await self._take(name, 0)
        except LockTimeoutError:
            return None

    @abstractmethod
    async def is_locked(self, name: str) -> bool:
        """Whether anyone (any process, when the backend is shared) holds the lock `name`."""

    @abstractmethod
    async def _acquire(
        self,
        name: str,
        timeout: float | None,  # noqa: ASYNC109 - the wait limit itself
    ) -> LockHandle:
        """Take the lock, or raise `LockTimeoutError` leaving nothing held (also when
        cancelled: a backend must not keep a lock its caller never received)."""

    async def _take(
        self,
        name: str,
        timeout: float | None,  # noqa: ASYNC109 - the wait limit itself
    ) -> LockHandle:
        self._check(name)
        handle = await self._acquire(name, timeout)
        self._held.add(handle)
        if self._closed:  # closed while this acquisition waited
            await handle.release()
            self._check(name)
        return handle

    def _check(self, name: str) -> None:
        """Refuse an empty name, and any name once closed."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a lock needs a non-empty string name, got {name!r}")
        if self._closed:
            raise LockError(f"lock {name!r}: the {type(self).__name__} was closed")

    def _forget(self, handle: LockHandle) -> None:
        self._held.discard(handle)

    async def close(self) -> None:
        self._closed = True
        for handle in list(self._held):
            await handle.release()
