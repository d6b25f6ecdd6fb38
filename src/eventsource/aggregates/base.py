"""`AggregateRoot` and `DeclarativeAggregate`: consistency boundaries rebuilt from their events."""

from __future__ import annotations

import inspect
import logging
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from types import FunctionType
from typing import Any, ClassVar, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from eventsource.events.base import NIL_AGGREGATE_ID, DomainEvent
from eventsource.events.handlers import collect_handlers
from eventsource.exceptions import InvalidEventError, UnhandledEventError
from eventsource.types import TState

__all__ = ["AggregateRoot", "DeclarativeAggregate", "UnhandledEventPolicy"]

logger = logging.getLogger(__name__)

TEvent = TypeVar("TEvent", bound=DomainEvent)
UnhandledEventPolicy = Literal["error", "warn", "ignore"]
_UNKNOWN: Any = object()


def _state_model(cls: type) -> type[BaseModel] | None:
    """The pydantic model bound to TState in `class X(AggregateRoot[State])`, if any."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            for arg in typing.get_args(base):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    return arg
    return None


class AggregateRoot(ABC, Generic[TState]):
    """An aggregate: state changed only by applying events, commands that raise new ones.

    Subclasses implement `_apply` (or use `DeclarativeAggregate`). The initial state is the
    state model built with no arguments; override `_get_initial_state` when it needs some.
    `aggregate_type` defaults to the class name.

    The state lives in one attribute, readable and assignable as `self.state` (preferred) or
    `self._state` (the package guide's spelling): a handler may mutate it in place or replace
    it with `self.state = NewState(...)` / `self._state = NewState(...)`, all the same.
    """

    aggregate_type: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1
    """Version of the state model's shape. Raise it when the state changes incompatibly:
    snapshots and cache entries taken with another `schema_version` are ignored (the stream is
    replayed instead)."""
    _state_type: ClassVar[type[BaseModel] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("aggregate_type"):
            cls.aggregate_type = cls.__name__
        cls._state_type = _state_model(cls)

    def __init__(self, aggregate_id: UUID) -> None:
        if aggregate_id == NIL_AGGREGATE_ID:
            raise InvalidEventError("an aggregate id cannot be the nil UUID")
        self._aggregate_id = aggregate_id
        self._version = 0
        self._uncommitted: list[DomainEvent] = []
        self._state: TState = self._get_initial_state()

    @property
    def state(self) -> TState:
        """The current state (the same object as `self._state`)."""
        return self._state

    @state.setter
    def state(self, value: TState) -> None:
        self._state = value

    def _get_initial_state(self) -> TState:
        state_type = type(self)._state_type
        if state_type is None:
            raise TypeError(
                f"{type(self).__qualname__} has no state model to build: declare it as "
                f"AggregateRoot[YourState] or override _get_initial_state()"
            )
        try:
            return typing.cast(TState, state_type())
        except Exception as exc:
            raise TypeError(
                f"{state_type.__qualname__}() needs arguments: give its fields defaults or "
                f"override {type(self).__qualname__}._get_initial_state()"
            ) from exc

    @abstractmethod
    def _apply(self, event: DomainEvent) -> None:
        """Change the state for one event (no I/O, no validation: the event happened)."""

    @property
    def aggregate_id(self) -> UUID:
        return self._aggregate_id

    @property
    def version(self) -> int:
        """Version including events not yet saved (0 for a new aggregate)."""
        return self._version

    @property
    def committed_version(self) -> int:
        """Version of the stream as last loaded or saved: the save's expected version."""
        return self._version - len(self._uncommitted)

    @property
    def uncommitted_events(self) -> tuple[DomainEvent, ...]:
        return tuple(self._uncommitted)

    @property
    def has_uncommitted_events(self) -> bool:
        return bool(self._uncommitted)

    def apply_event(self, event: TEvent, *, is_new: bool = True) -> TEvent:
        """Apply an event; new events are stamped with this aggregate and queued for saving.

        Returns the event as applied (stamped with aggregate id, type and version).
        """
        if is_new:
            event = event.attached(self._aggregate_id, self.aggregate_type, self._version + 1)
        elif event.aggregate_version != self._version + 1:
            raise InvalidEventError(
                f"{self.aggregate_type} {self._aggregate_id} is at version {self._version}; "
                f"cannot apply {event.event_type} of version {event.aggregate_version}"
            )
        self._apply(event)
        self._version = event.aggregate_version
        if is_new:
            self._uncommitted.append(event)
        return event

    def snapshot_state(self) -> str:
        """The state as JSON text, for a snapshot or a cache entry (without the state
        model's computed fields: they are computed again on restore)."""
        state = self.state
        computed = type(state).__pydantic_computed_fields__
        return state.model_dump_json(exclude=set(computed) if computed else None)

    def state_reads_back(self, text: str) -> bool:
        """Whether `text` (this aggregate's `snapshot_state()`) restores to the same state:
        False when the state model drops or changes something on the way (a field excluded
        from serialization, a serializer that changes a value). A repository neither caches
        nor snapshots such a state, which would come back different."""
        state = self.state
        try:
            restored = type(state).model_validate_json(text, by_alias=True, by_name=True)
        except ValidationError:
            return False
        # Field values as held (excluded fields included, computed ones left out), and the
        # extra fields of a model that allows them.
        return bool(
            restored.__dict__ == state.__dict__
            and restored.__pydantic_extra__ == state.__pydantic_extra__
        )

    def restore_snapshot(self, state: str, version: int) -> None:
        """Take the state of a snapshot (`snapshot_state()` output) taken at `version`.

        Only a fresh aggregate (nothing applied yet) can be restored. Raises pydantic's
        `ValidationError` when `state` does not fit the state model; the aggregate is then
        unchanged.
        """
        if self._version or self._uncommitted:
            raise InvalidEventError(
                f"{self.aggregate_type} {self._aggregate_id} already has events applied; "
                "restore a snapshot into a new aggregate"
            )
        if version < 0:
            raise InvalidEventError(f"a snapshot version must be >= 0, got {version}")
        state_type = type(self)._state_type or type(self.state)
        # Fields by name (what `snapshot_state` writes) or alias: a state model with aliases
        # and no populate_by_name would otherwise drop them, or refuse them as extra.
        restored = state_type.model_validate_json(state, by_alias=True, by_name=True)
        self.state = typing.cast(TState, restored)
        self._version = version

    def load_from_history(self, events: Iterable[DomainEvent]) -> None:
        """Replay stored events, in version order, to rebuild the state."""
        for event in events:
            self.apply_event(event, is_new=False)

    def mark_events_as_committed(self) -> None:
        self._uncommitted.clear()

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self._aggregate_id} v{self._version}>"


class DeclarativeAggregate(AggregateRoot[TState]):
    """An aggregate whose `_apply` dispatches to methods marked `@handles(EventClass)`.

    `unhandled_events` says what an event without a handler does: "error" (default) raises
    `UnhandledEventError`, "warn" logs a warning, "ignore" does nothing.
    """

    unhandled_events: ClassVar[UnhandledEventPolicy] = "error"
    _handlers: ClassVar[dict[type[DomainEvent], str]] = {}
    _dispatch: ClassVar[dict[type[DomainEvent], Callable[[Any, Any], object] | None]] = {}
    """Event class -> the function that handles it (called with the aggregate and the
    event), filled as classes are met: a replay pays one dict lookup per event."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.unhandled_events not in ("error", "warn", "ignore"):
            raise TypeError(
                f"{cls.__qualname__}.unhandled_events must be 'error', 'warn' or 'ignore'"
            )
        cls._handlers = collect_handlers(cls)
        cls._dispatch = {}

    def _apply(self, event: DomainEvent) -> None:
        event_class = type(event)
        dispatch = type(self)._dispatch
        handler = dispatch.get(event_class, _UNKNOWN)
        if handler is _UNKNOWN:
            handler = dispatch[event_class] = self._handler_function(event_class)
        if handler is not None:
            handler(self, event)
        elif self.unhandled_events == "error":
            raise UnhandledEventError(
                f"{type(self).__qualname__} has no @handles method for {event.event_type} "
                "(add one, or set unhandled_events = 'ignore')"
            )
        elif self.unhandled_events == "warn":
            logger.warning(
                "%s has no handler for %s; event ignored",
                type(self).__qualname__,
                event.event_type,
            )

    @classmethod
    def _handler_function(
        cls, event_type: type[DomainEvent]
    ) -> Callable[[Any, Any], object] | None:
        """What `_apply` calls for `event_type`: the plain function of a handler method,
        else (a staticmethod, a descriptor) a call through `getattr`; None: no handler."""
        name = cls._handler_name(event_type)
        if name is None:
            return None
        member = inspect.getattr_static(cls, name)
        if isinstance(member, FunctionType):
            return member
        return lambda aggregate, event: getattr(aggregate, name)(event)

    @classmethod
    def _handler_name(cls, event_type: type[DomainEvent]) -> str | None:
        handlers = cls._handlers
        name = handlers.get(event_type)
        if name is None:
            # A handler of a base event class also handles its subclasses.
            for base in event_type.__mro__[1:]:
                if base in handlers:
                    name = handlers[base]
                    break
        return name
