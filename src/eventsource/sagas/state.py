"""Saga statuses, the `StateMachine` that allows or refuses a move between them, and the
`saga_context` variable that tells a step's code which saga and step it runs for."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, ClassVar
from uuid import UUID

from eventsource.exceptions import SagaTransitionError

if TYPE_CHECKING:
    from eventsource.sagas.definition import StepContext

__all__ = ["SagaStatus", "StateMachine", "current_saga", "saga_context"]


class SagaStatus(enum.StrEnum):
    """Where a saga instance is in its life.

    PENDING (started, no step run yet) -> RUNNING -> COMPLETED, or -> FAILED (a step raised,
    the deadline passed, or it was cancelled) -> COMPENSATING -> COMPENSATED, or
    COMPENSATION_FAILED when a compensation used up its retries (parked for an operator, who
    can retry it: back to COMPENSATING).
    """

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"

    @property
    def is_final(self) -> bool:
        """COMPLETED or COMPENSATED: nothing will happen to the saga any more."""
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)


class StateMachine:
    """The moves a saga may make between statuses (`valid_transitions`).

    `transition(target)` moves it, or raises `SagaTransitionError` (nothing changed). Every
    status change of a saga instance goes through here before its event is recorded.
    """

    valid_transitions: ClassVar[Mapping[SagaStatus, frozenset[SagaStatus]]] = {
        SagaStatus.PENDING: frozenset({SagaStatus.RUNNING, SagaStatus.FAILED}),
        SagaStatus.RUNNING: frozenset({SagaStatus.COMPLETED, SagaStatus.FAILED}),
        SagaStatus.FAILED: frozenset({SagaStatus.COMPENSATING}),
        SagaStatus.COMPENSATING: frozenset(
            {SagaStatus.COMPENSATED, SagaStatus.COMPENSATION_FAILED}
        ),
        SagaStatus.COMPENSATION_FAILED: frozenset({SagaStatus.COMPENSATING}),
        SagaStatus.COMPLETED: frozenset(),
        SagaStatus.COMPENSATED: frozenset(),
    }

    def __init__(
        self, state: SagaStatus = SagaStatus.PENDING, *, saga_id: UUID | None = None
    ) -> None:
        self.state = state
        self.saga_id = saga_id

    def can_transition(self, target: SagaStatus) -> bool:
        return target in self.valid_transitions[self.state]

    def check(self, target: SagaStatus) -> None:
        """`SagaTransitionError` unless the move to `target` is allowed (changes nothing)."""
        if not self.can_transition(target):
            raise SagaTransitionError(self.saga_id, self.state.value, target.value)

    def transition(self, target: SagaStatus) -> None:
        """Move to `target`, or raise `SagaTransitionError` and stay."""
        self.check(target)
        self.state = target


saga_context: ContextVar[StepContext | None] = ContextVar("saga_context", default=None)
"""The step being run (its saga id, step name, idempotency key), set by the engine around
each action and compensation, so code deep inside a step (logging, an outgoing request's
headers) can read it without being passed it."""


def current_saga() -> StepContext | None:
    """The `StepContext` of the step running in this task, or None outside a step."""
    return saga_context.get()
