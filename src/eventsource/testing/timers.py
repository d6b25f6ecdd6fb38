"""`TimerStoreContract`: the behaviour every saga `TimerStore` backend must have.

A backend's test module subclasses it and supplies the store::

    class TestMyTimers(TimerStoreContract):
        async def create_timers(self) -> TimerStore:
            return MyTimerStore(...)

        async def reopen(self, timers: TimerStore) -> TimerStore:
            return MyTimerStore(...)  # a new instance on the same storage

Times are explicit (the engine passes its clock's), so the suite uses a fixed base time and
never sleeps.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from eventsource.sagas.timers import TimerStore

__all__ = ["TimerStoreContract"]

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class TimerStoreContract(ABC):
    """Abstract pytest suite; subclasses implement `create_timers` and `reopen`."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_timers(self) -> TimerStore:
        """A new, empty timer store (schema created; closed by the suite)."""

    @abstractmethod
    async def reopen(self, timers: TimerStore) -> TimerStore:
        """Another instance on the storage of `timers`, as a restarted process opens it (the
        in-memory store returns itself: it lives as long as the process)."""

    @pytest.fixture
    async def timers(self) -> AsyncIterator[TimerStore]:
        store = await self.create_timers()
        try:
            yield store
        finally:
            await store.close()

    async def test_a_timer_is_claimed_once_due(self, timers: TimerStore) -> None:
        saga = uuid4()
        await timers.schedule(saga, "timeout", _at(10))
        assert await timers.claim_due(_at(9), limit=10, lease=LEASE) == []
        [claimed] = await timers.claim_due(_at(10), limit=10, lease=LEASE)
        assert (claimed.saga_id, claimed.name, claimed.due_at) == (saga, "timeout", _at(10))

    async def test_due_timers_come_earliest_first_up_to_the_limit(self, timers: TimerStore) -> None:
        sagas = [uuid4() for _ in range(5)]
        for n, saga in enumerate(sagas):
            await timers.schedule(saga, "resume", _at(5 - n))
        claimed = await timers.claim_due(_at(100), limit=3, lease=LEASE)
        assert [t.saga_id for t in claimed] == [sagas[4], sagas[3], sagas[2]]

    async def test_a_claimed_timer_is_not_claimed_again_until_its_lease_ends(
        self, timers: TimerStore
    ) -> None:
        saga = uuid4()
        await timers.schedule(saga, "resume", _at(0))
        assert len(await timers.claim_due(_at(1), limit=10, lease=LEASE)) == 1
        assert await timers.claim_due(_at(2), limit=10, lease=LEASE) == []
        # The claimer died: once its lease ran out, another claims the timer.
        [again] = await timers.claim_due(_at(1) + LEASE, limit=10, lease=LEASE)
        assert again.saga_id == saga

    async def test_complete_deletes_the_fired_timer(self, timers: TimerStore) -> None:
        saga = uuid4()
        await timers.schedule(saga, "resume", _at(0))
        [claimed] = await timers.claim_due(_at(0), limit=10, lease=LEASE)
        assert await timers.complete(claimed) is True
        assert await timers.pending(saga) == []
        assert await timers.claim_due(_at(1000), limit=10, lease=LEASE) == []

    async def test_a_timer_scheduled_again_while_claimed_survives_completion(
        self, timers: TimerStore
    ) -> None:
        saga = uuid4()
        await timers.schedule(saga, "resume", _at(0))
        [claimed] = await timers.claim_due(_at(0), limit=10, lease=LEASE)
        await timers.schedule(saga, "resume", _at(1))  # e.g. a signal arrived meanwhile
        assert await timers.complete(claimed) is False
        [again] = await timers.claim_due(_at(1), limit=10, lease=LEASE)
        assert again.due_at == _at(1)
        assert again.generation > claimed.generation

    async def test_release_gives_the_timer_back_for_later(self, timers: TimerStore) -> None:
        saga = uuid4()
        await timers.schedule(saga, "resume", _at(0))
        [claimed] = await timers.claim_due(_at(0), limit=10, lease=LEASE)
        await timers.release(claimed, _at(5))
        assert await timers.claim_due(_at(4), limit=10, lease=LEASE) == []
        [again] = await timers.claim_due(_at(5), limit=10, lease=LEASE)
        assert again.saga_id == saga
        # The first claim is stale now: releasing it again changes nothing.
        await timers.release(claimed, _at(0))
        assert await timers.claim_due(_at(6), limit=10, lease=LEASE) == []

    async def test_scheduling_again_replaces_the_due_time(self, timers: TimerStore) -> None:
        saga = uuid4()
        await timers.schedule(saga, "timeout", _at(10))
        await timers.schedule(saga, "timeout", _at(20))
        [timer] = await timers.pending(saga)
        assert timer.due_at == _at(20)
        assert await timers.claim_due(_at(15), limit=10, lease=LEASE) == []

    async def test_timers_of_one_saga_are_kept_apart_by_name(self, timers: TimerStore) -> None:
        saga, other = uuid4(), uuid4()
        await timers.schedule(saga, "timeout", _at(10))
        await timers.schedule(saga, "resume", _at(1))
        await timers.schedule(other, "resume", _at(2))
        assert [t.name for t in await timers.pending(saga)] == ["resume", "timeout"]
        assert len(await timers.pending()) == 3
        assert await timers.cancel(saga, "timeout") is True
        assert await timers.cancel(saga, "timeout") is False
        assert [t.name for t in await timers.pending(saga)] == ["resume"]

    async def test_next_due_counts_claims_until_they_end(self, timers: TimerStore) -> None:
        assert await timers.next_due() is None
        await timers.schedule(uuid4(), "resume", _at(3))
        assert await timers.next_due() == _at(3)
        await timers.claim_due(_at(3), limit=10, lease=LEASE)
        assert await timers.next_due() == _at(3) + LEASE

    async def test_concurrent_claims_take_each_timer_once(self, timers: TimerStore) -> None:
        sagas = {uuid4() for _ in range(40)}
        for saga in sagas:
            await timers.schedule(saga, "resume", _at(0))
        batches = await asyncio.gather(
            *(timers.claim_due(_at(1), limit=3, lease=LEASE) for _ in range(20))
        )
        claimed = [timer.saga_id for batch in batches for timer in batch]
        claimed += [t.saga_id for t in await timers.claim_due(_at(1), limit=100, lease=LEASE)]
        assert sorted(claimed) == sorted(sagas)  # every timer, none twice

    async def test_timers_outlive_the_process_that_set_them(self, timers: TimerStore) -> None:
        saga = uuid4()
        await timers.schedule(saga, "timeout", _at(60))
        reopened = await self.reopen(timers)
        try:
            [fired] = await reopened.claim_due(_at(60), limit=10, lease=LEASE)
            assert (fired.saga_id, fired.name) == (saga, "timeout")
            assert await reopened.complete(fired) is True
        finally:
            if reopened is not timers:
                await reopened.close()
        assert await timers.pending(saga) == []
