"""Durable sagas and process managers.

A `Saga` is a list of `SagaStep`s (an action and an optional compensation; a tuple of steps
runs concurrently). The `WorkflowEngine` runs saga instances as event-sourced aggregates
(`SagaInstance`, one stream each), records each step before and after its action (an action
gets an idempotency key that is the same on every run of that step), compensates completed
steps in reverse order when a step fails, the deadline passes or the saga is cancelled,
retries failing compensations with backoff and parks them (COMPENSATION_FAILED) for an
operator. Wake-ups are durable timers (`TimerStore`: memory, SQLite, PostgreSQL) claimed by
whichever engine process is up; one process drives a saga at a time (`DistributedLock`).
A `ProcessManager` starts and signals sagas from domain events of the feed. See docs/sagas.md.

The SQLite and PostgreSQL timer stores are imported on first access (no driver otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource.exceptions import (
    SagaDefinitionError,
    SagaError,
    SagaNotFoundError,
    SagaTransitionError,
)
from eventsource.sagas.compensation import CompensationManager, compensation_order
from eventsource.sagas.definition import Action, Compensation, Saga, SagaStep, StepContext
from eventsource.sagas.engine import RESUME_TIMER, TIMEOUT_TIMER, WorkflowEngine
from eventsource.sagas.events import SAGA_EVENTS
from eventsource.sagas.instance import SAGA_AGGREGATE_TYPE, SagaInstance, SagaState
from eventsource.sagas.process import ProcessManager, saga_id_for
from eventsource.sagas.readmodel import SagaStatusProjection, SagaSummary
from eventsource.sagas.scheduler import Clock, WorkflowScheduler
from eventsource.sagas.state import SagaStatus, StateMachine, current_saga, saga_context
from eventsource.sagas.timers import ClaimedTimer, InMemoryTimerStore, Timer, TimerStore

if TYPE_CHECKING:
    from eventsource.sagas.postgresql import PostgreSQLTimerStore
    from eventsource.sagas.sqlite import SQLiteTimerStore

__all__ = [
    "RESUME_TIMER",
    "SAGA_EVENTS",
    "SAGA_AGGREGATE_TYPE",
    "TIMEOUT_TIMER",
    "Action",
    "ClaimedTimer",
    "Clock",
    "Compensation",
    "CompensationManager",
    "InMemoryTimerStore",
    "PostgreSQLTimerStore",
    "ProcessManager",
    "SQLiteTimerStore",
    "Saga",
    "SagaDefinitionError",
    "SagaError",
    "SagaInstance",
    "SagaNotFoundError",
    "SagaState",
    "SagaStatus",
    "SagaStatusProjection",
    "SagaStep",
    "SagaSummary",
    "SagaTransitionError",
    "StateMachine",
    "StepContext",
    "Timer",
    "TimerStore",
    "WorkflowEngine",
    "WorkflowScheduler",
    "compensation_order",
    "current_saga",
    "saga_context",
    "saga_id_for",
]


def __getattr__(name: str) -> Any:
    if name == "SQLiteTimerStore":
        from eventsource.sagas.sqlite import SQLiteTimerStore

        return SQLiteTimerStore
    if name == "PostgreSQLTimerStore":
        from eventsource.sagas.postgresql import PostgreSQLTimerStore

        return PostgreSQLTimerStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
