"""`DistributedLockContract`: the behaviour every `DistributedLock` backend must have.

A backend's test module subclasses it and supplies a lock instance::

    class TestMyLocks(DistributedLockContract):
        async def create_lock(self) -> DistributedLock:
            return MyDistributedLock(...)

Each test uses lock names of its own, so backends shared between tests stay isolated.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from eventsource.exceptions import LockError, LockTimeoutError
from eventsource.locks.interface import DistributedLock, LockHandle

__all__ = ["DistributedLockContract"]

_PATIENCE = 30.0
"""Seconds a test waits for something that must happen; only a failing backend waits long."""


def _name(label: str) -> str:
    return f"{label}-{uuid4().hex[:12]}"


class DistributedLockContract(ABC):
    """Abstract pytest suite; subclasses implement `create_lock`."""

    pytestmark = pytest.mark.asyncio

    contenders = 25
    """How many tasks compete for one lock in the mutual-exclusion test."""

    @abstractmethod
    async def create_lock(self) -> DistributedLock:
        """A new lock instance (closed by the suite)."""

    @pytest.fixture
    async def locks(self) -> AsyncIterator[DistributedLock]:
        lock = await self.create_lock()
        try:
            yield lock
        finally:
            await lock.close()

    async def test_mutual_exclusion_under_contention(self, locks: DistributedLock) -> None:
        name = _name("counter")
        counter = 0
        inside = 0
        most_inside = 0

        async def increment() -> None:
            nonlocal counter, inside, most_inside
            async with locks.acquire(name, timeout=_PATIENCE):
                inside += 1
                most_inside = max(most_inside, inside)
                seen = counter
                await asyncio.sleep(0.002)  # a lost update if another task got in
                counter = seen + 1
                inside -= 1

        await asyncio.gather(*(increment() for _ in range(self.contenders)))
        assert (counter, most_inside) == (self.contenders, 1)
        assert not await locks.is_locked(name)

    async def test_try_acquire_returns_none_while_held(self, locks: DistributedLock) -> None:
        name = _name("try")
        held = await locks.try_acquire(name)
        assert held is not None
        assert held.name == name
        assert await locks.is_locked(name)
        assert await locks.try_acquire(name) is None
        await held.release()
        assert not held.held
        again = await locks.try_acquire(name)
        assert again is not None
        await again.release()

    async def test_locks_are_not_reentrant(self, locks: DistributedLock) -> None:
        name = _name("reentry")
        async with locks.acquire(name, timeout=_PATIENCE) as handle:
            assert await locks.try_acquire(name) is None
            with pytest.raises(LockTimeoutError) as raised:
                await locks.acquire(name, timeout=0.2)
            assert (raised.value.name, raised.value.timeout) == (name, 0.2)
            assert handle.held

    async def test_timeout_raises_and_leaves_no_lock(self, locks: DistributedLock) -> None:
        name = _name("timeout")
        holder = await locks.acquire(name)
        waiters = [locks.acquire(name, timeout=0.3) for _ in range(5)]
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(o, LockTimeoutError) for o in outcomes), outcomes
        assert isinstance(outcomes[0], TimeoutError)  # catchable as the builtin too
        await holder.release()
        assert not await locks.is_locked(name)
        after = await locks.try_acquire(name)
        assert after is not None
        await after.release()

    async def test_zero_timeout_tries_once(self, locks: DistributedLock) -> None:
        name = _name("zero")
        async with locks.acquire(name, timeout=0):
            with pytest.raises(LockTimeoutError):
                await locks.acquire(name, timeout=0)

    async def test_release_lets_the_next_waiter_in(self, locks: DistributedLock) -> None:
        name = _name("handover")
        holder = await locks.acquire(name)
        waiter = asyncio.create_task(_wait_for(locks, name))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await holder.release()
        successor = await waiter
        assert successor.held
        assert await locks.is_locked(name)
        assert await locks.try_acquire(name) is None
        await successor.release()
        assert not await locks.is_locked(name)

    async def test_cancelled_waiter_leaves_no_lock(self, locks: DistributedLock) -> None:
        name = _name("cancel")
        holder = await locks.acquire(name)
        waiters = [asyncio.create_task(_wait_for(locks, name)) for _ in range(3)]
        await asyncio.sleep(0.2)
        for waiter in waiters:
            waiter.cancel()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
        await holder.release()
        assert not await locks.is_locked(name)  # no cancelled waiter got it, even briefly
        after = await locks.try_acquire(name)
        assert after is not None
        await after.release()

    async def test_different_names_do_not_block_each_other(self, locks: DistributedLock) -> None:
        names = [_name(f"free{i}") for i in range(10)]
        everyone_in = asyncio.Barrier(len(names))

        async def hold(name: str) -> bool:
            async with locks.acquire(name, timeout=_PATIENCE) as handle:
                async with asyncio.timeout(_PATIENCE):
                    await everyone_in.wait()  # only passes if all ten hold theirs at once
                return handle.held

        assert await asyncio.gather(*(hold(n) for n in names)) == [True] * len(names)

    async def test_block_releases_on_exception(self, locks: DistributedLock) -> None:
        name = _name("raise")
        with pytest.raises(RuntimeError, match="inside"):
            async with locks.acquire(name, timeout=_PATIENCE):
                raise RuntimeError("inside the block")
        assert not await locks.is_locked(name)
        handle = await locks.try_acquire(name)
        assert handle is not None
        async with handle:  # a handle is an async context manager too
            assert await handle.alive()
        assert not handle.held
        assert not await handle.alive()

    async def test_release_is_idempotent(self, locks: DistributedLock) -> None:
        name = _name("twice")
        first = await locks.acquire(name)
        await first.release()
        second = await locks.acquire(name, timeout=0)
        await first.release()  # must not release the lock `second` holds
        assert await locks.try_acquire(name) is None
        await second.check()
        await second.release()

    async def test_close_releases_held_locks_and_refuses_more(self) -> None:
        lock = await self.create_lock()
        name = _name("close")
        handle = await lock.acquire(name)
        await lock.close()
        assert not handle.held
        with pytest.raises(LockError, match="closed"):
            await lock.acquire(name)

    async def test_bad_arguments_are_refused(self, locks: DistributedLock) -> None:
        with pytest.raises(ValueError, match="name"):
            locks.acquire("")
        with pytest.raises(ValueError, match="timeout"):
            locks.acquire(_name("negative"), timeout=-1)


async def _wait_for(locks: DistributedLock, name: str) -> LockHandle:
    return await locks.acquire(name, timeout=_PATIENCE)
