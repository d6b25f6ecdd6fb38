"""`WorkflowEngine`: runs durable sagas.

A saga instance is an event-sourced aggregate (`SagaInstance`) with its own stream, and the
engine drives it forward by recording what happens around each step:

1. `SagaStepsStarted` is appended *before* a step's action runs (one event for a parallel
   group);
2. the action runs with a `StepContext` whose `idempotency_key` (`<saga id>:<step>`) is the
   same on every run of that step;
3. `SagaStepCompleted` (with the action's result and the commands it sent, in one append) is
   appended after it.

A process that dies between 1 and 3 leaves the step *in doubt*; whoever resumes the saga runs
it again with the same key, so an action that honours its key has its effect once. A step is
never run again once its completion is recorded.

Who drives: every wake-up is a durable timer (`TimerStore`): "resume" when the saga is started,
signalled, cancelled or retried, its deadline, a step's delay, a compensation's backoff. An
engine claims due timers (`run`, `run_until_idle`), takes the saga's lock (`DistributedLock`:
one driver per saga at a time; a PostgreSQL advisory lock dies with its process, and the
timer's claim expires, so another engine takes over) and drives it until it has to wait. The
stream's optimistic concurrency backs the lock up: a writer that lost the lock cannot append
over a newer state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsource._internal.clock import utc_now
from eventsource._internal.closing import AsyncClosing
from eventsource._internal.ids import uuid7
from eventsource.aggregates.repository import AggregateRepository
from eventsource.events.base import DomainEvent
from eventsource.exceptions import (
    AggregateNotFoundError,
    OptimisticLockError,
    SagaDefinitionError,
    SagaNotFoundError,
)
from eventsource.locks.in_memory import InMemoryDistributedLock
from eventsource.locks.interface import DistributedLock
from eventsource.sagas.compensation import CompensationManager, compensation_order
from eventsource.sagas.definition import Saga, SagaStep, StepContext
from eventsource.sagas.instance import SagaInstance, SagaState
from eventsource.sagas.scheduler import Clock, WorkflowScheduler
from eventsource.sagas.state import SagaStatus, saga_context
from eventsource.sagas.timers import ClaimedTimer, TimerStore
from eventsource.stores.interface import EventStore

__all__ = ["RESUME_TIMER", "TIMEOUT_TIMER", "WorkflowEngine"]

logger = logging.getLogger(__name__)

RESUME_TIMER = "resume"
TIMEOUT_TIMER = "timeout"
_RECORD_RETRIES = 20


class WorkflowEngine(AsyncClosing):
    """Starts, drives, signals and cancels sagas whose streams live in `event_store` and
    whose wake-ups live in `timers`.

    Register each `Saga` definition (`sagas=` or `register`) in every process that runs an
    engine: a stored saga names its definition. `locks` keeps one driver per saga: the
    default (in-memory) is enough for one process; engines in several processes need a
    shared lock (`PostgreSQLDistributedLock`). `lease` is how long a claimed timer is kept
    from other engines (keep it above a saga's longest drive: a step's action); `clock`
    is read for every time decision (a `ManualClock` in tests).
    """

    def __init__(
        self,
        event_store: EventStore,
        timers: TimerStore,
        *,
        sagas: Iterable[Saga] = (),
        locks: DistributedLock | None = None,
        clock: Clock = utc_now,
        lease: timedelta = timedelta(seconds=30),
        busy_retry: timedelta = timedelta(seconds=1),
        max_concurrent: int = 8,
        poll_interval: float = 1.0,
        compensation_attempts: int = 3,
        compensation_backoff: timedelta = timedelta(seconds=1),
        compensation_backoff_cap: timedelta = timedelta(minutes=5),
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.event_store = event_store
        self.repository: AggregateRepository[SagaInstance] = AggregateRepository(
            event_store, SagaInstance, max_retries=_RECORD_RETRIES
        )
        self.clock = clock
        self.scheduler = WorkflowScheduler(timers, clock=clock)
        self.compensations = CompensationManager(
            self,
            max_attempts=compensation_attempts,
            backoff=compensation_backoff,
            backoff_cap=compensation_backoff_cap,
        )
        self._owns_locks = locks is None
        self.locks: DistributedLock = locks if locks is not None else InMemoryDistributedLock()
        self.lease = lease
        self.busy_retry = busy_retry
        self.max_concurrent = max_concurrent
        self.poll_interval = poll_interval
        self._sagas: dict[str, Saga] = {}
        self._stopping = asyncio.Event()
        self._deferred: dict[UUID, list[Callable[[SagaInstance], Any]]] = {}
        for saga in sagas:
            self.register(saga)

    # -- definitions -------------------------------------------------------------------------

    def register(self, saga: Saga) -> Saga:
        """Make `saga` runnable by this engine (by its name); returns it."""
        known = self._sagas.get(saga.name)
        if known is not None and known is not saga:
            raise SagaDefinitionError(f"another saga named {saga.name!r} is registered already")
        self._sagas[saga.name] = saga
        return saga

    def definition(self, saga: Saga | str) -> Saga:
        name = saga if isinstance(saga, str) else saga.name
        found = self._sagas.get(name)
        if found is None:
            if isinstance(saga, Saga):
                return self.register(saga)
            raise SagaDefinitionError(
                f"no saga named {name!r} is registered with this engine (registered: "
                f"{', '.join(sorted(self._sagas)) or 'none'}); register it in every engine process"
            )
        return found

    # -- commands ----------------------------------------------------------------------------

    async def start(
        self,
        saga: Saga | str,
        data: Mapping[str, Any] | None = None,
        *,
        saga_id: UUID | None = None,
        correlation_key: str | None = None,
    ) -> UUID:
        """Start a saga instance (PENDING) and schedule it to run; returns its id.

        Starting an id that exists already changes nothing (a repeated start, such as the
        same event delivered twice to a `ProcessManager`). The saga runs in whichever engine
        claims its timer (`run`, `run_until_idle`).
        """
        definition = self.definition(saga)
        if saga_id is None:  # a new id: no stream to look for
            saga_id = uuid7()
            instance = self.repository.create_new(saga_id)
        else:
            instance = await self.repository.load_or_create(saga_id)
            if instance.version:
                return saga_id
        now = self.clock()
        deadline = None if definition.timeout is None else now + definition.timeout
        # The wake-ups are stored before the start: a crash right after the append leaves a
        # timer that resumes the saga (a timer whose saga never appeared is dropped).
        await self.scheduler.schedule(saga_id, RESUME_TIMER, at=now)
        if deadline is not None:
            await self.scheduler.schedule(saga_id, TIMEOUT_TIMER, at=deadline)
        instance.start(
            definition.name, dict(data or {}), deadline=deadline, correlation_key=correlation_key
        )
        # An OptimisticLockError: started concurrently by someone else; that start stands.
        with contextlib.suppress(OptimisticLockError):
            await self.repository.save(instance)
        return saga_id

    async def signal(
        self,
        saga_id: UUID,
        signal: str,
        payload: Mapping[str, Any] | None = None,
        *,
        source_event_id: UUID | str | None = None,
    ) -> bool:
        """Record the signal `signal` (its payload joins the saga's data) and resume the saga.

        A step declared with `wait_for=signal` lets the saga go on once it arrived. With a
        `source_event_id`, a second signal from the same event is dropped: False.
        """
        source = None if source_event_id is None else str(source_event_id)
        recorded = await self._update(
            saga_id, lambda i: i.receive_signal(signal, dict(payload or {}), source)
        )
        if recorded:
            await self.resume(saga_id)
        return bool(recorded)

    async def cancel(self, saga_id: UUID, reason: str = "cancelled") -> bool:
        """Cancel a PENDING or RUNNING saga: it fails and its completed steps are compensated
        (a step running now finishes first). `SagaTransitionError` once it completed or
        failed already; False if cancelled already."""
        cancelled = await self._update(saga_id, lambda i: i.request_cancel(reason))
        await self.resume(saga_id)
        return bool(cancelled)

    async def retry_compensation(self, saga_id: UUID, *, requested_by: str = "") -> None:
        """`CompensationManager.retry`: retry a saga parked as COMPENSATION_FAILED."""
        await self.compensations.retry(saga_id, requested_by=requested_by)

    async def resume(self, saga_id: UUID) -> None:
        """Wake the saga up now (it is driven by whichever engine claims the timer)."""
        await self.scheduler.schedule(saga_id, RESUME_TIMER)

    async def get(self, saga_id: UUID) -> SagaState:
        """The saga's state rebuilt from its stream; `SagaNotFoundError` if it has none."""
        instance = await self.repository.load_or_create(saga_id)
        if not instance.version:
            raise SagaNotFoundError(saga_id)
        return instance.state

    # -- running -----------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim the timers due now (up to `max_concurrent`) and drive their sagas, at once;
        how many timers were claimed."""
        claimed = await self.scheduler.claim(limit=self.max_concurrent, lease=self.lease)
        if claimed:
            await asyncio.gather(*(self._fire(timer) for timer in claimed))
        return len(claimed)

    async def run_until_idle(self, *, max_rounds: int = 10_000) -> int:
        """Drive sagas until no timer is due now (tests, scripts, the docs); how many timers
        fired. Timers due later (per `clock`) are left for later."""
        fired = 0
        for _ in range(max_rounds):
            claimed = await self.run_once()
            if not claimed:
                return fired
            fired += claimed
        raise RuntimeError(f"sagas were still due after {max_rounds} rounds")

    async def run(self) -> None:
        """Drive sagas as their timers come due, until `stop()` or cancellation."""
        self._stopping.clear()
        while not self._stopping.is_set():
            try:
                claimed = await self.run_once()
            except Exception:
                logger.exception("saga engine: claiming timers failed; retrying")
                claimed = 0
            if not claimed:
                await self.scheduler.wait(self.poll_interval)

    def stop(self) -> None:
        """Make `run()` return after the sagas it drives now."""
        self._stopping.set()
        self.scheduler._wake.set()

    async def drive(self, saga_id: UUID) -> SagaState:
        """Drive one saga now, under its lock, until it has to wait (tests, operators); its
        state afterwards. `LockTimeoutError` if another driver holds it."""
        async with self.locks.acquire(self._lock_name(saga_id), timeout=0):
            instance = await self.repository.load_or_create(saga_id)
            if not instance.version:
                raise SagaNotFoundError(saga_id)
            await self._drive(instance)
            return instance.state

    def _lock_name(self, saga_id: UUID) -> str:
        return f"saga:{saga_id}"

    async def _fire(self, timer: ClaimedTimer) -> None:
        """Drive the saga of a claimed timer under its lock, then complete the timer."""
        now = self.clock()
        handle = await self.locks.try_acquire(self._lock_name(timer.saga_id))
        if handle is None:  # another driver has it: try again a little later
            await self.scheduler.timers.release(timer, now + self.busy_retry)
            return
        try:
            async with handle:
                instance = await self.repository.load_or_create(timer.saga_id)
                if instance.version:
                    await self._drive(instance)
                elif now - timer.due_at < self.lease:
                    # Its start may not have committed yet: look again later.
                    await self.scheduler.timers.release(timer, now + self.busy_retry)
                    return
        except SagaDefinitionError as exc:  # another engine process may know the saga
            logger.warning("saga %s: %s; left for later", timer.saga_id, exc)
            await self.scheduler.timers.release(timer, self.clock() + self.busy_retry)
            return
        except Exception:
            logger.exception("saga %s: driving it failed; it is retried", timer.saga_id)
            await self.scheduler.timers.release(timer, self.clock() + self.busy_retry)
            return
        await self.scheduler.timers.complete(timer)

    async def _drive(self, instance: SagaInstance) -> None:
        """Move the saga forward until it has to wait or is over, then append what is still
        deferred (see `_defer`); after an error the deferred records are dropped (their
        steps are in doubt, and re-run with the same key)."""
        try:
            await self._drive_loop(instance)
        except BaseException:
            self._deferred.pop(instance.aggregate_id, None)
            raise
        if instance.aggregate_id in self._deferred:
            await self._record(instance, _nothing)

    async def _drive_loop(self, instance: SagaInstance) -> None:
        definition = self.definition(instance.state.saga_name)
        while True:
            state = instance.state
            status = state.status
            if status in (SagaStatus.PENDING, SagaStatus.RUNNING):
                if not await self._forward(definition, instance):
                    return
            elif status is SagaStatus.FAILED:
                order = compensation_order(definition, state)
                await self._record(instance, _compensate(order))
            elif status is SagaStatus.COMPENSATING:
                if not await self.compensations.compensate_next(definition, instance):
                    return
            else:  # COMPLETED, COMPENSATED, COMPENSATION_FAILED: nothing to do
                if status.is_final and state.deadline is not None:
                    await self.scheduler.cancel(instance.aggregate_id, TIMEOUT_TIMER)
                return

    async def _forward(self, definition: Saga, instance: SagaInstance) -> bool:
        """One move of a PENDING or RUNNING saga; False when it has to wait."""
        state = instance.state
        now = self.clock()
        if state.cancel_requested is not None:
            reason = f"cancelled: {state.cancel_requested}"
            await self._record(instance, lambda i: i.fail(reason))
            return True
        if state.deadline is not None and now >= state.deadline:
            await self._record(instance, lambda i: i.fail(f"timed out at {state.deadline}"))
            return True
        if any(
            definition.steps[name].wait_for not in (None, *state.signals)
            for name in state.completed
            if name in definition.steps
        ):
            return False  # a signal is awaited: its arrival (or the deadline) resumes us
        unit = next(
            (u for u in definition.units if any(s.name not in state.completed for s in u)), None
        )
        if unit is None:
            await self._record(instance, lambda i: i.complete())
            return True
        pending = [step for step in unit if step.name not in state.completed]
        for step in pending:
            if step.delay is not None and step.name not in state.started:
                due = state.delayed.get(step.name)
                if due is None:
                    due = now + step.delay
                    if not await self._record(instance, _delay(step.name, due)):
                        return True  # the saga moved on meanwhile: decide again
                if now < due:
                    timer = f"delay:{step.name}"
                    await self.scheduler.schedule(instance.aggregate_id, timer, at=due)
                    return False
        await self._run_unit(definition, instance, pending)
        return True

    async def _run_unit(
        self, definition: Saga, instance: SagaInstance, steps: Sequence[SagaStep]
    ) -> None:
        names = [step.name for step in steps]
        if not await self._record(instance, lambda i: i.start_steps(names)):
            return  # the saga moved on meanwhile (cancelled?): decide again
        outcomes = await asyncio.gather(*(self._run_action(definition, instance, s) for s in steps))
        done = [(name, result, commands) for name, result, commands, error in outcomes if not error]
        errors = {name: error for name, _, _, error in outcomes if error}

        def record(i: SagaInstance) -> None:
            for name, result, commands in done:
                i.complete_step(name, result, commands)
            if errors:
                i.fail_steps(errors)

        if errors:
            await self._record(instance, record, outcome=True)
        else:
            # Appended with the next record (the next unit's start, the saga's end) or when
            # the drive stops, in one append: no more I/O happens before it than before a
            # record of its own, so a crash leaves the same steps in doubt.
            self._defer(instance, record)

    async def _run_action(
        self, definition: Saga, instance: SagaInstance, step: SagaStep
    ) -> tuple[str, dict[str, Any], list[DomainEvent], str | None]:
        state = instance.state
        context = StepContext(
            saga_id=instance.aggregate_id,
            saga_name=definition.name,
            step=step.name,
            idempotency_key=f"{instance.aggregate_id}:{step.name}",
            attempt=state.started.get(step.name, 1),
            data=dict(state.data),
        )
        token = saga_context.set(context)
        try:
            result = await step.action(context)
            if result is not None and not isinstance(result, Mapping):
                raise TypeError(
                    f"step {step.name!r} returned {type(result).__name__}: an action returns "
                    "a mapping (merged into the saga's data) or None"
                )
        except Exception as exc:
            error = "".join(traceback.format_exception_only(exc)).strip()
            logger.warning("saga %s: step %r failed: %s", instance.aggregate_id, step.name, error)
            return step.name, {}, [], error
        finally:
            saga_context.reset(token)
        commands = self._stamp(instance.aggregate_id, step.name, context.commands)
        return step.name, dict(result or {}), commands, None

    def _stamp(
        self, saga_id: UUID, step: str, commands: Sequence[DomainEvent]
    ) -> list[DomainEvent]:
        """Commands as recorded: tagged with the saga and step that sent them."""
        return [c.with_metadata(saga_id=str(saga_id), saga_step=step) for c in commands]

    # -- recording ---------------------------------------------------------------------------

    def _defer(self, instance: SagaInstance, command: Callable[[SagaInstance], Any]) -> None:
        """Apply `command` now and append it with the next `_record` of this saga."""
        command(instance)
        self._deferred.setdefault(instance.aggregate_id, []).append(command)

    async def _record(
        self,
        instance: SagaInstance,
        command: Callable[[SagaInstance], Any],
        *,
        outcome: bool = False,
    ) -> bool:
        """Apply `command` to the driven instance and append what it recorded, with what was
        deferred. True when the command was recorded.

        When the stream moved on meanwhile (a signal, a cancellation appended by someone
        else), the saga is reloaded. Outcomes (what an action or a compensation did: deferred
        records and `outcome=True`) are applied again and appended: they happened. Any other
        command is a decision taken on the old state: it is dropped (False), and the caller
        decides again on the new state.
        """
        keep = self._deferred.pop(instance.aggregate_id, [])
        command(instance)
        if outcome:
            keep.append(command)
        for attempt in range(_RECORD_RETRIES):
            try:
                await self.repository.save(instance)
                return attempt == 0 or outcome
            except OptimisticLockError:
                if attempt == _RECORD_RETRIES - 1:
                    raise
                fresh = await self.repository.load(instance.aggregate_id)
                instance.__dict__.update(fresh.__dict__)
                if not keep:
                    return False
                for each in keep:
                    each(instance)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _update(self, saga_id: UUID, command: Callable[[SagaInstance], Any]) -> Any:
        """`command` on the stored saga, retried on a version conflict."""
        try:
            return await self.repository.execute(saga_id, command)
        except AggregateNotFoundError:
            raise SagaNotFoundError(saga_id) from None

    async def close(self) -> None:
        self.stop()
        await self.repository.close()
        if self._owns_locks:
            await self.locks.close()


def _delay(step: str, due: datetime) -> Callable[[SagaInstance], None]:
    return lambda instance: instance.delay_step(step, due)


def _compensate(order: list[str]) -> Callable[[SagaInstance], None]:
    return lambda instance: instance.start_compensation(order)


def _nothing(instance: SagaInstance) -> None:
    """A record of nothing: appends what was deferred."""
