"""`SagaInstance`: one running saga as an event-sourced aggregate with its own stream.

Its state (status, steps started and completed, data, deadline, compensations) is rebuilt
from the saga events (`eventsource.sagas.events`) like any aggregate's, so a saga survives a
restart and can be inspected by loading it. Commands check the `StateMachine` before they
record anything; the engine is the only caller besides operators (cancel, retry).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel

from eventsource.aggregates.base import DeclarativeAggregate
from eventsource.events.base import DomainEvent
from eventsource.events.handlers import handles
from eventsource.sagas.events import (
    SagaCancelRequested,
    SagaCompensated,
    SagaCompensationParked,
    SagaCompensationRetried,
    SagaCompensationStarted,
    SagaCompensationStepCompleted,
    SagaCompensationStepFailed,
    SagaCompleted,
    SagaFailed,
    SagaSignalReceived,
    SagaStarted,
    SagaStepCompleted,
    SagaStepDelayed,
    SagaStepFailed,
    SagaStepsStarted,
)
from eventsource.sagas.state import SagaStatus, StateMachine

__all__ = ["SAGA_AGGREGATE_TYPE", "SagaInstance", "SagaState"]

SAGA_AGGREGATE_TYPE = "eventsource.Saga"


class SagaState(BaseModel):
    """What a saga instance's events say about it (`WorkflowEngine.get`)."""

    saga_name: str = ""
    status: SagaStatus = SagaStatus.PENDING
    data: dict[str, Any] = {}
    deadline: datetime | None = None
    correlation_key: str | None = None
    started: dict[str, int] = {}
    """Step -> how many times its action was started (more than 1: re-run after a crash)."""
    completed: list[str] = []
    """Steps whose action finished, in the order they finished."""
    failed: dict[str, str] = {}
    """Step -> the error its action raised."""
    reason: str | None = None
    """Why the saga failed: a step's error, "timed out", or the cancellation's reason."""
    cancel_requested: str | None = None
    delayed: dict[str, datetime] = {}
    signals: dict[str, dict[str, Any]] = {}
    seen_signals: list[str] = []
    """Ids of the domain events whose signals were recorded (duplicates are dropped)."""
    to_compensate: list[str] = []
    """The steps to compensate, in order (most recently completed first)."""
    compensated: list[str] = []
    compensation_attempts: dict[str, int] = {}
    retry_at: datetime | None = None
    """When the failed compensation is tried again."""
    parked_step: str | None = None
    parked_error: str | None = None
    commands_sent: int = 0

    @property
    def in_doubt(self) -> list[str]:
        """Steps started with no outcome recorded: their action may or may not have run
        (the process died, or the saga was cancelled meanwhile)."""
        return [s for s in self.started if s not in self.completed and s not in self.failed]


class SagaInstance(DeclarativeAggregate[SagaState]):
    """One saga's stream. Events other than saga events (the commands a step sent, appended
    with the step's completion) are kept in the stream and ignored by the state."""

    aggregate_type: ClassVar[str] = SAGA_AGGREGATE_TYPE
    unhandled_events = "ignore"

    def _machine(self) -> StateMachine:
        return StateMachine(self.state.status, saga_id=self.aggregate_id)

    def _move(self, target: SagaStatus) -> None:
        self._machine().check(target)

    # -- commands ----------------------------------------------------------------------------

    def start(
        self,
        saga_name: str,
        data: dict[str, Any],
        *,
        deadline: datetime | None,
        correlation_key: str | None,
    ) -> bool:
        """Record the start; False when this saga exists already (a repeated start)."""
        if self.version:
            return False
        self.apply_event(
            SagaStarted(
                saga_name=saga_name, data=data, deadline=deadline, correlation_key=correlation_key
            )
        )
        return True

    def start_steps(self, steps: Sequence[str]) -> None:
        if self.state.status is SagaStatus.PENDING:
            self._move(SagaStatus.RUNNING)
        elif self.state.status is not SagaStatus.RUNNING:
            self._move(SagaStatus.RUNNING)  # raises: only a running saga starts steps
        self.apply_event(SagaStepsStarted(steps=list(steps)))

    def complete_step(
        self, step: str, result: dict[str, Any], commands: Sequence[DomainEvent]
    ) -> bool:
        """Record a step's outcome and the commands it sent; False if recorded already."""
        if step in self.state.completed or step not in self.state.started:
            return False
        self.apply_event(SagaStepCompleted(step=step, result=result, commands=len(commands)))
        for command in commands:
            self.apply_event(command)
        return True

    def fail_steps(self, errors: dict[str, str]) -> None:
        if self.state.status is SagaStatus.RUNNING:
            self._move(SagaStatus.FAILED)
        self.apply_event(SagaStepFailed(errors=errors))

    def delay_step(self, step: str, due_at: datetime) -> None:
        if step not in self.state.delayed:
            self.apply_event(SagaStepDelayed(step=step, due_at=due_at))

    def receive_signal(
        self, signal: str, payload: dict[str, Any], source_event_id: str | None
    ) -> bool:
        """Record a signal; False for a duplicate or a saga that is over."""
        if self.state.status.is_final:
            return False
        if source_event_id is not None and source_event_id in self.state.seen_signals:
            return False
        self.apply_event(
            SagaSignalReceived(signal=signal, payload=payload, source_event_id=source_event_id)
        )
        return True

    def request_cancel(self, reason: str) -> bool:
        """Ask the saga to stop and compensate; False if asked already."""
        self._move(SagaStatus.FAILED)
        if self.state.cancel_requested is not None:
            return False
        self.apply_event(SagaCancelRequested(reason=reason))
        return True

    def fail(self, reason: str) -> None:
        self._move(SagaStatus.FAILED)
        self.apply_event(SagaFailed(reason=reason))

    def complete(self) -> None:
        self._move(SagaStatus.COMPLETED)
        self.apply_event(SagaCompleted())

    def start_compensation(self, steps: Sequence[str]) -> None:
        self._move(SagaStatus.COMPENSATING)
        self.apply_event(SagaCompensationStarted(steps=list(steps)))

    def compensation_done(self, step: str, commands: Sequence[DomainEvent] = ()) -> None:
        if step not in self.state.compensated:
            self.apply_event(SagaCompensationStepCompleted(step=step))
            for command in commands:
                self.apply_event(command)

    def compensation_failed(self, step: str, error: str, retry_at: datetime) -> None:
        attempt = self.state.compensation_attempts.get(step, 0) + 1
        self.apply_event(
            SagaCompensationStepFailed(step=step, attempt=attempt, error=error, retry_at=retry_at)
        )

    def park(self, step: str, error: str) -> None:
        self._move(SagaStatus.COMPENSATION_FAILED)
        attempts = self.state.compensation_attempts.get(step, 0) + 1
        self.apply_event(SagaCompensationParked(step=step, attempts=attempts, error=error))

    def retry_compensation(self, requested_by: str) -> None:
        self._move(SagaStatus.COMPENSATING)
        self.apply_event(SagaCompensationRetried(requested_by=requested_by))

    def finish_compensation(self) -> None:
        self._move(SagaStatus.COMPENSATED)
        self.apply_event(SagaCompensated())

    # -- event handlers ----------------------------------------------------------------------

    @handles(SagaStarted)
    def _started(self, event: SagaStarted) -> None:
        s = self.state
        s.saga_name, s.data, s.deadline = event.saga_name, dict(event.data), event.deadline
        s.correlation_key = event.correlation_key

    @handles(SagaStepsStarted)
    def _steps_started(self, event: SagaStepsStarted) -> None:
        self.state.status = SagaStatus.RUNNING
        for step in event.steps:
            self.state.started[step] = self.state.started.get(step, 0) + 1

    @handles(SagaStepCompleted)
    def _step_completed(self, event: SagaStepCompleted) -> None:
        self.state.completed.append(event.step)
        self.state.data.update(event.result)
        self.state.commands_sent += event.commands

    @handles(SagaStepFailed)
    def _step_failed(self, event: SagaStepFailed) -> None:
        self.state.failed.update(event.errors)
        if self.state.status is SagaStatus.RUNNING:
            self.state.status = SagaStatus.FAILED
            self.state.reason = "; ".join(
                f"step {s!r} failed: {e}" for s, e in event.errors.items()
            )

    @handles(SagaStepDelayed)
    def _step_delayed(self, event: SagaStepDelayed) -> None:
        self.state.delayed[event.step] = event.due_at

    @handles(SagaSignalReceived)
    def _signal(self, event: SagaSignalReceived) -> None:
        self.state.signals[event.signal] = dict(event.payload)
        self.state.data.update(event.payload)
        if event.source_event_id is not None:
            self.state.seen_signals.append(event.source_event_id)

    @handles(SagaCancelRequested)
    def _cancel_requested(self, event: SagaCancelRequested) -> None:
        self.state.cancel_requested = event.reason

    @handles(SagaFailed)
    def _failed(self, event: SagaFailed) -> None:
        self.state.status = SagaStatus.FAILED
        self.state.reason = event.reason

    @handles(SagaCompleted)
    def _completed(self, event: SagaCompleted) -> None:
        self.state.status = SagaStatus.COMPLETED

    @handles(SagaCompensationStarted)
    def _compensation_started(self, event: SagaCompensationStarted) -> None:
        self.state.status = SagaStatus.COMPENSATING
        self.state.to_compensate = list(event.steps)

    @handles(SagaCompensationStepCompleted)
    def _compensation_done(self, event: SagaCompensationStepCompleted) -> None:
        self.state.compensated.append(event.step)
        self.state.retry_at = None

    @handles(SagaCompensationStepFailed)
    def _compensation_failed(self, event: SagaCompensationStepFailed) -> None:
        self.state.compensation_attempts[event.step] = event.attempt
        self.state.retry_at = event.retry_at

    @handles(SagaCompensationParked)
    def _parked(self, event: SagaCompensationParked) -> None:
        self.state.status = SagaStatus.COMPENSATION_FAILED
        self.state.compensation_attempts[event.step] = event.attempts
        self.state.parked_step, self.state.parked_error = event.step, event.error
        self.state.retry_at = None

    @handles(SagaCompensationRetried)
    def _retried(self, event: SagaCompensationRetried) -> None:
        self.state.status = SagaStatus.COMPENSATING
        if self.state.parked_step is not None:
            self.state.compensation_attempts[self.state.parked_step] = 0
        self.state.parked_step = self.state.parked_error = None

    @handles(SagaCompensated)
    def _compensated(self, event: SagaCompensated) -> None:
        self.state.status = SagaStatus.COMPENSATED
