"""Given/when/then for aggregates and projections: domain tests that read like the rule.

    given(Account, AccountOpened(owner="ann")).when(lambda a: a.withdraw(5)).then_raises(
        InsufficientFunds
    )
    given(Account, AccountOpened(owner="ann")).when(lambda a: a.deposit(5)).then(
        MoneyDeposited(amount=5)
    )
    await given(balances, *history).then(Balance(id=account_id, amount=5))

`given(AggregateClass, *events)` rebuilds the aggregate from the events (stamped as one
stream by an `EventBuilder` where they are bare), `when(command)` runs a plain synchronous
command on it, and the `then...` methods compare what the command raised (events compared as
in `eventsource.testing.compare`: business fields always, envelope fields only where the
expected event sets them). Every failure is an `AssertionError` with a field-by-field diff.

`given(projection, *events)` appends the events to a private `InMemoryEventStore` (so they
make the JSON round trip a real store makes) and hands the feed to `projection.handle` in
order, filtered by `interested_in()` as a subscription would; `then(*read_models)` compares
the models a `ReadModelProjection` stored, `then_state(getter, expected)` any other state.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar, overload
from uuid import UUID

from pydantic import BaseModel

from eventsource.aggregates.base import AggregateRoot
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.projections.base import Projection
from eventsource.readmodels.interface import ModelId, ReadModelRepository
from eventsource.stores.in_memory import InMemoryEventStore
from eventsource.stores.interface import ExpectedVersion
from eventsource.testing.builder import EventBuilder
from eventsource.testing.compare import (
    ExpectedEvent,
    assert_events_equal,
    assert_state_equal,
    describe_event,
)

__all__ = ["AggregateOutcome", "AggregateScenario", "ProjectionScenario", "given"]

TAggregate = TypeVar("TAggregate", bound=AggregateRoot)  # type: ignore[type-arg]
TProjection = TypeVar("TProjection", bound=Projection)


@overload
def given(
    target: type[TAggregate], *events: DomainEvent, aggregate_id: UUID | None = None
) -> AggregateScenario[TAggregate]: ...


@overload
def given(
    target: TProjection,
    *events: DomainEvent,
    aggregate_id: UUID | None = None,
    registry: EventRegistry | None = None,
) -> ProjectionScenario[TProjection]: ...


def given(
    target: type[TAggregate] | TProjection,
    *events: DomainEvent,
    aggregate_id: UUID | None = None,
    registry: EventRegistry | None = None,
) -> AggregateScenario[TAggregate] | ProjectionScenario[TProjection]:
    """Start a scenario: an aggregate class and its history, or a projection and the
    events it receives (bare events are stamped as one stream, of `aggregate_id` or a new
    id; see `EventBuilder`)."""
    if isinstance(target, type) and issubclass(target, AggregateRoot):
        if registry is not None:
            raise TypeError("registry= applies to projection scenarios only")
        return AggregateScenario(target, events, aggregate_id=aggregate_id)
    if isinstance(target, Projection):
        return ProjectionScenario(target, events, aggregate_id=aggregate_id, registry=registry)
    raise TypeError(
        f"given() takes an aggregate class (an AggregateRoot subclass) or a projection "
        f"instance, not {target!r}"
    )


class AggregateScenario(Generic[TAggregate]):
    """An aggregate class and its history; `when(command)` runs a command on it."""

    def __init__(
        self,
        aggregate_class: type[TAggregate],
        history: Sequence[DomainEvent],
        *,
        aggregate_id: UUID | None = None,
    ) -> None:
        self.aggregate_class = aggregate_class
        first = next((event for event in history if event.is_attached), None)
        stream_id = aggregate_id or (first.aggregate_id if first is not None else None)
        self._builder = EventBuilder(stream_id, aggregate_type=aggregate_class.aggregate_type)
        self.history = self._builder.events(*history)
        self.aggregate_id = self._builder.aggregate_id

    def aggregate(self) -> TAggregate:
        """A new aggregate rebuilt from the history."""
        aggregate = self.aggregate_class(self.aggregate_id)
        aggregate.load_from_history(self.history)
        return aggregate

    def when(self, command: Callable[[TAggregate], object]) -> AggregateOutcome[TAggregate]:
        """Run `command(aggregate)` (synchronous: aggregates do no I/O) on the rebuilt
        aggregate; what it raised or recorded is checked by the outcome's `then...`."""
        aggregate = self.aggregate()
        try:
            result = command(aggregate)
        except Exception as exc:
            return AggregateOutcome(aggregate, None, exc)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                "when() runs a synchronous command on the aggregate; an async command "
                "(I/O) belongs in a test through a repository or the Harness"
            )
        return AggregateOutcome(aggregate, result, None)

    def then_state(self, expected: BaseModel) -> TAggregate:
        """Without a command: assert the state the history rebuilds."""
        aggregate = self.aggregate()
        assert_state_equal(aggregate.state, expected, what=f"the state of {aggregate!r}")
        return aggregate


class AggregateOutcome(Generic[TAggregate]):
    """What a command did: the events it recorded, or the exception it raised."""

    def __init__(self, aggregate: TAggregate, result: object, error: Exception | None) -> None:
        self.aggregate = aggregate
        self.result = result
        """What the command returned."""
        self.error = error

    @property
    def events(self) -> tuple[DomainEvent, ...]:
        """The events the command recorded (not saved anywhere)."""
        return self.aggregate.uncommitted_events

    def _no_error(self, expectation: str) -> None:
        if self.error is not None:
            raise AssertionError(
                f"expected {expectation}, but the command raised "
                f"{type(self.error).__qualname__}: {self.error}"
            ) from self.error

    def then(self, *expected: ExpectedEvent) -> TAggregate:
        """Assert that the command recorded exactly these events, in order; returns the
        aggregate (its state after the command) for further checks."""
        self._no_error(f"{len(expected)} event(s)")
        assert_events_equal(self.events, expected, what="the events the command recorded")
        return self.aggregate

    def then_nothing(self) -> TAggregate:
        """Assert that the command neither raised nor recorded an event."""
        self._no_error("no event")
        assert_events_equal(self.events, (), what="the events the command recorded")
        return self.aggregate

    def then_raises(self, error: type[Exception], *, match: str | None = None) -> Exception:
        """Assert that the command raised `error` (or a subclass), whose message contains a
        match of the regular expression `match` when given; returns the exception."""
        if self.error is None:
            recorded = ", ".join(describe_event(e) for e in self.events) or "no event"
            raise AssertionError(
                f"expected the command to raise {error.__qualname__}, but it succeeded and "
                f"recorded {recorded}"
            )
        if not isinstance(self.error, error):
            raise AssertionError(
                f"expected the command to raise {error.__qualname__}, but it raised "
                f"{type(self.error).__qualname__}: {self.error}"
            ) from self.error
        if match is not None and not re.search(match, str(self.error)):
            raise AssertionError(
                f"the command raised {type(self.error).__qualname__} as expected, but its "
                f"message {str(self.error)!r} does not match {match!r}"
            ) from self.error
        return self.error

    def then_state(self, expected: BaseModel) -> TAggregate:
        """Assert the aggregate's state after the command (which must not have raised)."""
        self._no_error("a new state")
        assert_state_equal(self.aggregate.state, expected, what=f"the state of {self.aggregate!r}")
        return self.aggregate


class ProjectionScenario(Generic[TProjection]):
    """A projection and the events it receives; each `then...` runs them once, first."""

    def __init__(
        self,
        projection: TProjection,
        events: Sequence[DomainEvent],
        *,
        aggregate_id: UUID | None = None,
        registry: EventRegistry | None = None,
    ) -> None:
        self.projection = projection
        self._registry = registry
        builder = EventBuilder(aggregate_id)
        self.events = [event if event.is_attached else builder.event(event) for event in events]
        self._ran = False

    async def run(self) -> TProjection:
        """Deliver the events to the projection (once); returns the projection."""
        if self._ran:
            return self.projection
        self._ran = True
        interest = self.projection.interested_in()
        async with InMemoryEventStore(registry=self._registry) as store:
            for event in self.events:
                await store.append_events(
                    event.aggregate_id, event.aggregate_type, [event], ExpectedVersion.ANY
                )
            async for stored in store.read_all():
                if interest is None or stored.event_type in interest:
                    await self.projection.handle(stored)
        return self.projection

    def _models(self) -> ReadModelRepository[Any]:
        models = getattr(self.projection, "models", None)
        if not isinstance(models, ReadModelRepository):
            raise TypeError(
                f"then() compares the read models of a ReadModelProjection; "
                f"{type(self.projection).__qualname__} keeps none in `self.models`: use "
                "then_state(getter, expected)"
            )
        return models

    async def then(self, *expected: BaseModel) -> TProjection:
        """Assert that the projection's read-model repository holds each expected model
        (looked up by its `id`), field by field; returns the projection."""
        await self.run()
        models = self._models()
        failures: list[str] = []
        for want in expected:
            model_id: ModelId = getattr(want, "id")  # noqa: B009 - any read model with an id
            got = await models.get(model_id)
            if got is None:
                failures.append(f"{type(want).__name__} {model_id}: missing, expected {want!r}")
                continue
            try:
                assert_state_equal(got, want, what=f"{type(want).__name__} {model_id}")
            except AssertionError as error:
                failures.append(str(error))
        if failures:
            raise AssertionError("read models differ:\n" + "\n".join(failures))
        return self.projection

    async def then_missing(self, *ids: ModelId) -> TProjection:
        """Assert that the projection's repository holds no model under these ids."""
        await self.run()
        models = self._models()
        found = [(model_id, await models.get(model_id)) for model_id in ids]
        present = [f"{model_id}: {model!r}" for model_id, model in found if model is not None]
        if present:
            raise AssertionError("expected no read model under:\n  " + "\n  ".join(present))
        return self.projection

    async def then_state(
        self, actual: Callable[[TProjection], object | Awaitable[object]], expected: object
    ) -> TProjection:
        """Assert that `actual(projection)` (sync or async) equals `expected`, field by
        field; e.g. `then_state(lambda p: p.balances, {account_id: 5})`."""
        await self.run()
        value = actual(self.projection)
        if inspect.isawaitable(value):
            value = await value
        assert_state_equal(value, expected, what=f"the state of {self.projection.name}")
        return self.projection

    async def then_raises(self, error: type[Exception], *, match: str | None = None) -> Exception:
        """Assert that handling the events raised `error`, matching `match` when given."""
        try:
            await self.run()
        except error as raised:
            if match is not None and not re.search(match, str(raised)):
                raise AssertionError(
                    f"{self.projection.name} raised {type(raised).__qualname__} as expected, "
                    f"but its message {str(raised)!r} does not match {match!r}"
                ) from raised
            return raised
        raise AssertionError(
            f"expected {self.projection.name} to raise {error.__qualname__}, but it handled "
            f"all {len(self.events)} events"
        )
