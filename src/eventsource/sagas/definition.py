"""What a saga is made of: `SagaStep`s (an action and its optional compensation), run in
order or, when grouped, concurrently; and the `StepContext` each action receives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from eventsource.events.base import DomainEvent
from eventsource.exceptions import SagaDefinitionError

__all__ = ["Action", "Compensation", "Saga", "SagaStep", "StepContext"]

Action = Callable[["StepContext"], Awaitable[Mapping[str, Any] | None]]
"""A step's action: `async def action(ctx) -> dict | None`; what it returns is merged into
the saga's data (and recorded with the step's completion)."""
Compensation = Callable[["StepContext"], Awaitable[None]]
"""Undoes a completed step: `async def compensation(ctx) -> None`."""


@dataclass(slots=True)
class StepContext:
    """What an action or a compensation is called with.

    `idempotency_key` is the same every time this step (or this compensation) of this saga
    runs, re-runs after a crash included: pass it to whatever the step changes (a payment
    provider's idempotency key, a unique column, an inbox record) so that running it twice
    has the effect of running it once. `attempt` counts the runs (1 on the first).
    Commands given to `send` are appended to the saga's stream together with the step's
    completion, so they are recorded exactly once, and an event store with an outbox
    publishes them.
    """

    saga_id: UUID
    saga_name: str
    step: str
    idempotency_key: str
    attempt: int
    data: Mapping[str, Any]
    compensating: bool = False
    commands: list[DomainEvent] = field(default_factory=list)

    def send(self, command: DomainEvent) -> None:
        """Record `command` in the saga's stream with this step's (or this compensation's)
        completion, in the same append."""
        self.commands.append(command)


@dataclass
class SagaStep:
    """One step of a saga: an action, and the compensation that undoes it (optional).

    `name` (default: the action's function name) identifies the step in the saga's stream:
    keep it stable across releases, or running sagas cannot find their step. `delay` makes
    the step wait that long after the previous ones finished (a durable timer); `wait_for`
    makes the saga wait, once this step's action ran, until the signal of that name arrives
    (`WorkflowEngine.signal`, or a `ProcessManager`); the signal's payload joins the data.
    """

    action: Action
    compensation: Compensation | None = None
    name: str = ""
    delay: timedelta | None = None
    wait_for: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            self.name = getattr(self.action, "__name__", "")
        if not self.name or self.name == "<lambda>":
            raise SagaDefinitionError(
                "a SagaStep needs a name: give name=..., or use a named function as its action"
            )


Unit = tuple[SagaStep, ...]


class Saga:
    """A saga definition: a name and its steps, run in order.

    A tuple or list of steps inside `steps` is a parallel group: its steps run concurrently,
    and the saga goes on when all of them finished. `timeout` bounds the whole saga: when it
    passes before the saga completed, the saga fails and is compensated (a durable timer,
    fired after a restart too). Step names must be unique within the saga.
    """

    def __init__(
        self,
        name: str,
        steps: Sequence[SagaStep | Sequence[SagaStep]],
        *,
        timeout: timedelta | None = None,
    ) -> None:
        if not name:
            raise SagaDefinitionError("a Saga needs a non-empty name")
        units: list[Unit] = []
        for item in steps:
            unit = (item,) if isinstance(item, SagaStep) else tuple(item)
            if not unit or not all(isinstance(step, SagaStep) for step in unit):
                raise SagaDefinitionError(
                    f"saga {name!r}: each entry of steps is a SagaStep or a non-empty group "
                    f"(tuple or list) of SagaSteps, not {item!r}"
                )
            units.append(unit)
        if not units:
            raise SagaDefinitionError(f"saga {name!r} has no steps")
        names = [step.name for unit in units for step in unit]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SagaDefinitionError(
                f"saga {name!r}: step names must be unique, {', '.join(duplicates)} repeat"
            )
        if timeout is not None and timeout <= timedelta(0):
            raise SagaDefinitionError(f"saga {name!r}: timeout must be positive, not {timeout}")
        self.name = name
        self.units: tuple[Unit, ...] = tuple(units)
        self.timeout = timeout
        self.steps: dict[str, SagaStep] = {step.name: step for unit in units for step in unit}

    def __repr__(self) -> str:
        return f"<Saga {self.name!r}: {len(self.steps)} steps>"
