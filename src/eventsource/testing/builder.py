"""`EventBuilder`: events of one stream with a realistic envelope, for givens and fixtures.

A test writes the business fields (`MoneyDeposited(amount=5)`); the builder fills in what
an aggregate and a store would have: the stream's aggregate id and type, consecutive
versions, timestamps that move forward by a fixed step from a fixed start (so tests are
reproducible, never dependent on the wall clock), and one correlation flow in which each
event is caused by the one before. A field the test set explicitly on the event is kept.

    build = EventBuilder(aggregate_type="Account")
    opened, deposited = build(AccountOpened(owner="ann"), MoneyDeposited(amount=5))
    assert deposited.aggregate_version == 2 and deposited.causation_id == opened.event_id
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload
from uuid import UUID

from eventsource._internal.ids import uuid7
from eventsource.events.base import NIL_AGGREGATE_ID, DomainEvent
from eventsource.exceptions import InvalidEventError

__all__ = ["EventBuilder"]

TEvent = TypeVar("TEvent", bound=DomainEvent)

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


class EventBuilder:
    """Stamps events as consecutive events of one stream (see the module docstring).

    `aggregate_id` defaults to a new UUID, `aggregate_type` to the event's own (or "");
    versions continue from `version` (the stream's version before the first built event).
    Timestamps start at `start` (default 2026-01-01 UTC) and advance by `step` per event.
    With `chain=True` (default) the first event starts a correlation flow (its correlation
    id is its own id, or `correlation_id` when given) and each later event carries that
    correlation id and the previous event's id as its causation id.
    """

    def __init__(
        self,
        aggregate_id: UUID | None = None,
        *,
        aggregate_type: str = "",
        version: int = 0,
        start: datetime = DEFAULT_START,
        step: timedelta = timedelta(seconds=1),
        tenant_id: UUID | None = None,
        correlation_id: UUID | None = None,
        chain: bool = True,
    ) -> None:
        if aggregate_id == NIL_AGGREGATE_ID:
            raise InvalidEventError("an aggregate id cannot be the nil UUID")
        if version < 0:
            raise ValueError(f"version must be >= 0, got {version}")
        if start.tzinfo is None:
            raise ValueError("start must be a timezone-aware datetime (UTC)")
        self.aggregate_id = aggregate_id or uuid7()
        self.aggregate_type = aggregate_type
        self.version = version
        """The version of the last event built (the stream's version so far)."""
        self.tenant_id = tenant_id
        self.chain = chain
        self._next_time = start
        self._step = step
        self._correlation_id = correlation_id
        self._last: DomainEvent | None = None

    @property
    def last(self) -> DomainEvent | None:
        """The last event built, None before the first."""
        return self._last

    def event(self, event: TEvent) -> TEvent:
        """`event` stamped as the stream's next event (fields it set explicitly are kept)."""
        explicit = event.model_fields_set
        update: dict[str, Any] = {}
        self.version += 1

        def fill(name: str, value: Any) -> None:
            if name not in explicit:
                update[name] = value

        fill("aggregate_id", self.aggregate_id)
        fill("aggregate_type", self.aggregate_type or event.aggregate_type)
        fill("aggregate_version", self.version)
        fill("occurred_at", self._next_time)
        if self.tenant_id is not None:
            fill("tenant_id", self.tenant_id)
        if self.chain:
            if self._last is None:
                fill("correlation_id", self._correlation_id or event.event_id)
            else:
                fill("correlation_id", self._last.correlation_id)
                fill("causation_id", self._last.event_id)
        built = event.model_copy(update=update)
        if "aggregate_version" in explicit:
            self.version = built.aggregate_version
        self._next_time = built.occurred_at + self._step
        self._last = built
        return built

    @overload
    def __call__(self, event: TEvent, /) -> TEvent: ...

    @overload
    def __call__(
        self, first: DomainEvent, second: DomainEvent, /, *events: DomainEvent
    ) -> list[DomainEvent]: ...

    def __call__(self, *events: DomainEvent) -> DomainEvent | list[DomainEvent]:
        """One event stamped (`build(e)`), or several in order as a list (`build(a, b)`)."""
        if not events:
            raise TypeError("EventBuilder() needs at least one event")
        built = [self.event(event) for event in events]
        return built[0] if len(built) == 1 else built

    def events(self, *events: DomainEvent) -> list[DomainEvent]:
        """The events stamped in order, always as a list."""
        return [self.event(event) for event in events]

    def stream(self, aggregate_id: UUID | None = None, *, aggregate_type: str = "") -> EventBuilder:
        """A builder of another stream that continues this one's clock and correlation flow
        (its first event is caused by this builder's last one): a process that spans
        aggregates."""
        other = EventBuilder(
            aggregate_id,
            aggregate_type=aggregate_type,
            start=self._next_time,
            step=self._step,
            tenant_id=self.tenant_id,
            correlation_id=self._correlation_id,
            chain=self.chain,
        )
        other._last = self._last
        return other
