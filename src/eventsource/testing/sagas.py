"""`SagaScenario`: test a saga (and its process manager) with a clock you move by hand.

    async with SagaScenario(order_saga, process_manager=routes) as scenario:
        await scenario.given(OrderPlaced(order_id="o-1", amount=30))
        scenario.expect_commands(ChargeCard)
        await scenario.advance(minutes=30)          # the payment never came: timeout
        await scenario.expect_status(scenario.saga_id("o-1"), SagaStatus.COMPENSATED)

Everything runs in memory (`InMemoryEventStore`, `InMemoryTimerStore`) on the same engine
code as production; timers fire when `advance` moves the `ManualClock` past them, never by
sleeping. No pytest needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from eventsource.events.base import DomainEvent
from eventsource.sagas.definition import Saga
from eventsource.sagas.engine import WorkflowEngine
from eventsource.sagas.instance import SagaState
from eventsource.sagas.process import ProcessManager, saga_id_for
from eventsource.sagas.state import SagaStatus
from eventsource.sagas.timers import InMemoryTimerStore
from eventsource.stores.in_memory import InMemoryEventStore
from eventsource.stores.interface import ReadOptions

__all__ = ["ManualClock", "SagaScenario"]


class ManualClock:
    """A clock that moves only when told: `clock()` reads it, `advance(...)` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | None = None, **units: float) -> datetime:
        """Move forward by `delta` or by `timedelta(**units)` (`minutes=5`); the new time."""
        step = delta if delta is not None else timedelta(**units)
        if step < timedelta(0):
            raise ValueError(f"a clock only moves forward, not by {step}")
        self.now += step
        return self.now


class SagaScenario:
    """An engine on in-memory storage and a `ManualClock`, with given/advance/expect steps.

    `process_manager(engine, saga)` builds the routes of a `ProcessManager` for `given`
    (for example `lambda engine, saga: ProcessManager(engine, saga).starts_on(...)`).
    Engine options (`compensation_attempts`, `compensation_backoff`, ...) pass through.
    """

    def __init__(
        self,
        saga: Saga,
        *,
        process_manager: Callable[[WorkflowEngine, Saga], ProcessManager] | None = None,
        clock: ManualClock | None = None,
        **engine_options: Any,
    ) -> None:
        self.saga = saga
        self.clock = clock or ManualClock()
        self.store = InMemoryEventStore()
        self.timers = InMemoryTimerStore()
        self.engine = WorkflowEngine(
            self.store, self.timers, sagas=[saga], clock=self.clock, **engine_options
        )
        self.process_manager = (
            None if process_manager is None else process_manager(self.engine, saga)
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.engine.close()
        await self.timers.close()
        await self.store.close()

    # -- given / when ------------------------------------------------------------------------

    async def start(
        self, data: Mapping[str, Any] | None = None, *, saga_id: UUID | None = None
    ) -> UUID:
        """Start an instance of the saga and run what is due; its id."""
        started = await self.engine.start(self.saga, data, saga_id=saga_id)
        await self.engine.run_until_idle()
        return started

    async def given(self, *events: DomainEvent) -> None:
        """Hand each event to the process manager, as the feed would, and run what is due."""
        if self.process_manager is None:
            raise ValueError("given(...) needs a process_manager= to route the events")
        for event in events:
            await self.process_manager.handle(event)
            await self.engine.run_until_idle()

    async def signal(self, saga_id: UUID, signal: str, **payload: Any) -> None:
        await self.engine.signal(saga_id, signal, payload)
        await self.engine.run_until_idle()

    async def cancel(self, saga_id: UUID, reason: str = "cancelled") -> None:
        await self.engine.cancel(saga_id, reason)
        await self.engine.run_until_idle()

    async def advance(self, delta: timedelta | None = None, **units: float) -> None:
        """Move the clock and fire the timers that came due (deadlines, delays, retries)."""
        self.clock.advance(delta, **units)
        await self.engine.run_until_idle()

    def saga_id(self, key: object) -> UUID:
        """The id of the saga instance the process manager correlates with `key`."""
        return saga_id_for(self.saga, key)

    # -- then --------------------------------------------------------------------------------

    async def state(self, saga_id: UUID) -> SagaState:
        return await self.engine.get(saga_id)

    async def commands(self, saga_id: UUID | None = None) -> list[DomainEvent]:
        """The commands the saga's steps sent (`ctx.send`), in the order they were recorded."""
        options = ReadOptions(aggregate_type=self.engine.repository.aggregate_type)
        sent = []
        async for stored in self.store.read_all(options):
            event = stored.event
            if "saga_step" in event.metadata and (saga_id is None or event.aggregate_id == saga_id):
                sent.append(event)
        return sent

    async def expect_commands(
        self, *expected: type[DomainEvent], saga_id: UUID | None = None
    ) -> list[DomainEvent]:
        """`AssertionError` unless the commands sent so far have exactly these types, in
        this order; returns them."""
        sent = await self.commands(saga_id)
        kinds = [type(c).__name__ for c in sent]
        wanted = [kind.__name__ for kind in expected]
        if kinds != wanted:
            raise AssertionError(f"commands sent: {kinds}; expected {wanted}")
        return sent

    async def expect_status(self, saga_id: UUID, status: SagaStatus) -> SagaState:
        state = await self.state(saga_id)
        if state.status is not status:
            raise AssertionError(
                f"saga {saga_id} is {state.status.value}, expected {status.value}"
                + (f" ({state.reason})" if state.reason else "")
            )
        return state

    async def expect_compensated(self, saga_id: UUID, steps: Sequence[str]) -> SagaState:
        """`AssertionError` unless exactly `steps` were compensated, in this order."""
        state = await self.state(saga_id)
        if state.compensated != list(steps):
            raise AssertionError(
                f"saga {saga_id} compensated {state.compensated}, expected {list(steps)}"
            )
        return state
