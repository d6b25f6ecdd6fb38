"""`CompensationManager`: undoes a failed saga's completed steps, most recent first.

Each compensation runs like a step: its idempotency key is fixed (`<saga id>:<step>:compensate`),
its success is recorded before the next one runs, and a crash before that record re-runs it.
A compensation that raises is retried with exponential backoff through a durable timer (the
saga's lock is not held while it waits); after `max_attempts` failures the saga is parked as
COMPENSATION_FAILED with the step and its error, visible (`WorkflowEngine.get`, the
`SagaStatusProjection` read model) and retryable by an operator (`retry`). Nothing is dropped.
"""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from eventsource.sagas.definition import Saga, StepContext
from eventsource.sagas.instance import SagaInstance, SagaState
from eventsource.sagas.state import saga_context

if TYPE_CHECKING:
    from eventsource.sagas.engine import WorkflowEngine

__all__ = ["CompensationManager", "compensation_order"]

logger = logging.getLogger(__name__)

RETRY_TIMER = "compensation-retry"


def compensation_order(definition: Saga, state: SagaState) -> list[str]:
    """The steps to compensate, in the order their compensations run: the steps in doubt
    (started, no outcome recorded: their effect may exist) first, then the completed steps,
    most recently completed first; steps without a compensation are left out, and so are
    steps whose action raised (an action that raises must leave nothing behind)."""
    ordered = [*state.completed, *state.in_doubt]
    return [
        name
        for name in reversed(ordered)
        if name in definition.steps and definition.steps[name].compensation is not None
    ]


class CompensationManager:
    """Runs a saga's compensations for its engine, and lets an operator retry a parked one.

    `max_attempts` (default 3) failures of one compensation park the saga; the pause before
    attempt n+1 is `backoff * 2**(n-1)`, at most `backoff_cap`.
    """

    def __init__(
        self,
        engine: WorkflowEngine,
        *,
        max_attempts: int = 3,
        backoff: timedelta = timedelta(seconds=1),
        backoff_cap: timedelta = timedelta(minutes=5),
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.engine = engine
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_cap = backoff_cap

    def delay(self, attempt: int) -> timedelta:
        """The pause after failed attempt number `attempt` (1, 2, ...)."""
        pause: timedelta = self.backoff * 2 ** (attempt - 1)
        return min(self.backoff_cap, pause)

    async def compensate_next(self, definition: Saga, instance: SagaInstance) -> bool:
        """Run the next compensation due; True to go on driving the saga, False to stop
        (a retry is scheduled, or the saga was parked)."""
        engine = self.engine
        state = instance.state
        now = engine.clock()
        if state.retry_at is not None and now < state.retry_at:
            await engine.scheduler.schedule(instance.aggregate_id, RETRY_TIMER, at=state.retry_at)
            return False
        step = next((s for s in state.to_compensate if s not in state.compensated), None)
        if step is None:
            await engine._record(instance, lambda i: i.finish_compensation())
            return True
        compensation = definition.steps[step].compensation
        assert compensation is not None  # compensation_order lists only steps that have one
        attempt = state.compensation_attempts.get(step, 0) + 1
        context = StepContext(
            saga_id=instance.aggregate_id,
            saga_name=definition.name,
            step=step,
            idempotency_key=f"{instance.aggregate_id}:{step}:compensate",
            attempt=attempt,
            data=dict(state.data),
            compensating=True,
        )
        token = saga_context.set(context)
        try:
            await compensation(context)
        except Exception as exc:
            error = "".join(traceback.format_exception_only(exc)).strip()
            logger.warning(
                "saga %s: compensation of step %r failed (attempt %d of %d): %s",
                instance.aggregate_id,
                step,
                attempt,
                self.max_attempts,
                error,
            )
            if attempt >= self.max_attempts:
                await engine._record(instance, lambda i: i.park(step, error), outcome=True)
                return False
            retry_at = engine.clock() + self.delay(attempt)
            await engine._record(
                instance, lambda i: i.compensation_failed(step, error, retry_at), outcome=True
            )
            await engine.scheduler.schedule(instance.aggregate_id, RETRY_TIMER, at=retry_at)
            return False
        finally:
            saga_context.reset(token)
        commands = engine._stamp(instance.aggregate_id, step, context.commands)
        await engine._record(instance, lambda i: i.compensation_done(step, commands), outcome=True)
        return True

    async def retry(self, saga_id: UUID, *, requested_by: str = "") -> None:
        """Retry a parked compensation (COMPENSATION_FAILED -> COMPENSATING): its attempts
        start over and the engine resumes the saga. `SagaTransitionError` if it is not
        parked; `SagaNotFoundError` if there is no such saga."""
        await self.engine._update(saga_id, lambda i: i.retry_compensation(requested_by))
        await self.engine.resume(saga_id)
