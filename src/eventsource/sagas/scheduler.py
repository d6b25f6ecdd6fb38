"""`WorkflowScheduler`: durable delayed work for sagas, on a `TimerStore`.

Where the seed's scheduler ran delayed tasks in a thread pool and forgot them on exit, this
one only stores *when to wake which saga up*; the engine claims what is due and drives the
saga, so a timer set before a restart fires after it, in whichever process claims it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

from eventsource._internal.clock import utc_now
from eventsource.sagas.timers import ClaimedTimer, Timer, TimerStore

__all__ = ["Clock", "WorkflowScheduler"]

_MIN_PAUSE = 0.01
"""Seconds: the shortest sleep, so a timer claimable "now" that another process claims
first does not turn the loop into a busy one."""

Clock = Callable[[], datetime]
"""What the engine reads the time from: `utc_now` by default, a `ManualClock` in tests."""


class WorkflowScheduler:
    """Schedules, claims and completes saga timers, reading the time from `clock`."""

    def __init__(self, timers: TimerStore, *, clock: Clock = utc_now) -> None:
        self.timers = timers
        self.clock = clock
        self._wake = asyncio.Event()

    async def schedule(
        self,
        saga_id: UUID,
        name: str,
        *,
        at: datetime | None = None,
        delay: timedelta | None = None,
    ) -> str:
        """Wake the saga up at `at`, or after `delay` (now when neither is given). Returns the
        timer's id, `"<saga id>/<name>"`; scheduling the same name again moves it."""
        if at is not None and delay is not None:
            raise ValueError("give at= or delay=, not both")
        now = self.clock()
        due = at if at is not None else now + (delay or timedelta(0))
        await self.timers.schedule(saga_id, name, due)
        if due <= now:
            self._wake.set()
        return f"{saga_id}/{name}"

    async def cancel(self, saga_id: UUID, name: str) -> bool:
        return await self.timers.cancel(saga_id, name)

    async def claim(self, *, limit: int, lease: timedelta) -> list[ClaimedTimer]:
        """The timers due now, claimed for `lease`."""
        return await self.timers.claim_due(self.clock(), limit=limit, lease=lease)

    async def pending(self, saga_id: UUID | None = None) -> list[Timer]:
        return await self.timers.pending(saga_id)

    async def wait(self, longest: float) -> None:
        """Sleep until the next timer is due, a timer due now is scheduled here, or `longest`
        seconds passed (other processes' timers are seen by polling)."""
        pause = longest
        next_due = await self.timers.next_due()
        if next_due is not None:
            pause = min(pause, max(0.0, (next_due - self.clock()).total_seconds()))
        pause = max(pause, _MIN_PAUSE)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await self._wake.wait()
        self._wake.clear()
