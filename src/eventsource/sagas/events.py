"""The events of a saga instance's own stream: what its state is rebuilt from.

Type names carry the `eventsource.saga.` prefix so they never collide with an application's
own event names. A step's outcome and the commands it sent are appended together, in one
append (see `WorkflowEngine`), so a saga never records a command without its step.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from eventsource.events.base import DomainEvent, UTCDateTime

__all__ = [
    "SAGA_EVENTS",
    "SagaCancelRequested",
    "SagaCompensated",
    "SagaCompensationParked",
    "SagaCompensationRetried",
    "SagaCompensationStarted",
    "SagaCompensationStepCompleted",
    "SagaCompensationStepFailed",
    "SagaCompleted",
    "SagaFailed",
    "SagaSignalReceived",
    "SagaStarted",
    "SagaStepCompleted",
    "SagaStepDelayed",
    "SagaStepFailed",
    "SagaStepsStarted",
]


class SagaStarted(DomainEvent):
    event_type: str = "eventsource.saga.Started"
    saga_name: str
    data: dict[str, Any] = Field(default_factory=dict)
    deadline: UTCDateTime | None = None
    correlation_key: str | None = None


class SagaStepsStarted(DomainEvent):
    """Recorded before the actions of `steps` run (one step, or a parallel group)."""

    event_type: str = "eventsource.saga.StepsStarted"
    steps: list[str]


class SagaStepCompleted(DomainEvent):
    event_type: str = "eventsource.saga.StepCompleted"
    step: str
    result: dict[str, Any] = Field(default_factory=dict)
    commands: int = 0
    """How many commands the step sent: the events appended right after this one."""


class SagaStepFailed(DomainEvent):
    event_type: str = "eventsource.saga.StepFailed"
    errors: dict[str, str]
    """Step name -> its error, for each step of the group whose action raised."""


class SagaStepDelayed(DomainEvent):
    event_type: str = "eventsource.saga.StepDelayed"
    step: str
    due_at: UTCDateTime


class SagaSignalReceived(DomainEvent):
    event_type: str = "eventsource.saga.SignalReceived"
    signal: str
    payload: dict[str, Any] = Field(default_factory=dict)
    source_event_id: str | None = None
    """The id of the domain event that carried the signal (a process manager's), so the
    same event delivered twice is recorded once."""


class SagaCancelRequested(DomainEvent):
    event_type: str = "eventsource.saga.CancelRequested"
    reason: str


class SagaFailed(DomainEvent):
    """The saga stops running forward: its deadline passed, or it was cancelled."""

    event_type: str = "eventsource.saga.Failed"
    reason: str


class SagaCompleted(DomainEvent):
    event_type: str = "eventsource.saga.Completed"


class SagaCompensationStarted(DomainEvent):
    event_type: str = "eventsource.saga.CompensationStarted"
    steps: list[str]
    """The steps to compensate, in the order their compensations run."""


class SagaCompensationStepCompleted(DomainEvent):
    event_type: str = "eventsource.saga.CompensationStepCompleted"
    step: str


class SagaCompensationStepFailed(DomainEvent):
    event_type: str = "eventsource.saga.CompensationStepFailed"
    step: str
    attempt: int
    error: str
    retry_at: UTCDateTime


class SagaCompensationParked(DomainEvent):
    event_type: str = "eventsource.saga.CompensationParked"
    step: str
    attempts: int
    error: str


class SagaCompensationRetried(DomainEvent):
    event_type: str = "eventsource.saga.CompensationRetried"
    requested_by: str = ""


class SagaCompensated(DomainEvent):
    event_type: str = "eventsource.saga.Compensated"


SAGA_EVENTS: tuple[type[DomainEvent], ...] = (
    SagaStarted,
    SagaStepsStarted,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepDelayed,
    SagaSignalReceived,
    SagaCancelRequested,
    SagaFailed,
    SagaCompleted,
    SagaCompensationStarted,
    SagaCompensationStepCompleted,
    SagaCompensationStepFailed,
    SagaCompensationParked,
    SagaCompensationRetried,
    SagaCompensated,
)
"""Every saga event class. They join `default_registry`; a store opened with a registry of
its own must know them too: `for cls in SAGA_EVENTS: registry.register(cls)`."""
