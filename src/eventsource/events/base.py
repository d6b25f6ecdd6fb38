"""`DomainEvent`: the immutable, pydantic-validated record of something that happened."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from eventsource._internal.clock import utc_now
from eventsource._internal.ids import uuid7
from eventsource.exceptions import SerializationError

if TYPE_CHECKING:
    from eventsource.events.registry import EventRegistry

__all__ = ["NIL_AGGREGATE_ID", "DomainEvent"]

NIL_AGGREGATE_ID = UUID(int=0)
"""Placeholder `aggregate_id` of an event not yet attached to a stream.

Aggregates and stores stamp the real id (and type and version) when the event is raised or
appended, so events can be constructed with their business fields only.
"""

_DEFAULT_REGISTRY: Any = object()


_ZERO = timedelta(0)
_STAMPED = frozenset({"aggregate_id", "aggregate_type", "aggregate_version"})
_new = object.__new__
# The slots of a pydantic model, set through their descriptors (a third faster than
# object.__setattr__, which looks each one up by name).
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _own_event_id(data: dict[str, Any]) -> UUID:
    """An event that starts a flow is its own correlation id (followers copy it)."""
    event_id: UUID = data["event_id"]
    return event_id


def _as_utc(value: datetime) -> datetime:
    return value if value.utcoffset() == _ZERO else value.astimezone(UTC)


UTCDateTime = Annotated[AwareDatetime, AfterValidator(_as_utc)]
"""A timezone-aware datetime, converted to UTC (naive datetimes are refused: ambiguous)."""


class DomainEvent(BaseModel):
    """Base class of every domain event.

    Subclasses add their business fields. The event type name defaults to the class name and
    can be set by overriding the `event_type` field default; `event_version` is the schema
    version of the class (raise it and register an upcaster when the fields change).

    Subclasses join `default_registry` when defined; pass `registry=None` in the class
    statement for an abstract intermediate base, or another `EventRegistry` to keep a set of
    events apart (tests, plugins). Joining by definition is lenient: two such classes with
    one type name (say in two test modules) import fine, and only looking the name up raises
    `DuplicateEventTypeError`; `@register_event` or `registry=` is an explicit claim, and two
    explicit claims of one name raise when the second class is defined::

        class MoneyDeposited(DomainEvent):
            amount: Decimal
    """

    # NaN and infinities are written as the JSON constants `NaN` / `Infinity` (not as `null`,
    # pydantic's default, which reads back as a different value or not at all), so that
    # `EventCodec.encode` can see and refuse them before anything is stored.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    event_id: UUID = Field(default_factory=uuid7)
    event_type: str = ""
    event_version: int = 1
    occurred_at: UTCDateTime = Field(default_factory=utc_now)
    aggregate_id: UUID = NIL_AGGREGATE_ID
    aggregate_type: str = ""
    aggregate_version: int = 0
    tenant_id: UUID | None = None
    correlation_id: UUID = Field(default_factory=_own_event_id)
    causation_id: UUID | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    __event_registry__: ClassVar[EventRegistry | None]
    __event_registry_implicit__: ClassVar[bool]
    __event_computed__: ClassVar[frozenset[str]] = frozenset()
    """The class's computed fields (`@computed_field`): derived from the others, so never
    stored or sent (`EventCodec`, `to_dict`), and ignored when an older payload has them."""
    __event_aliased__: ClassVar[bool] = False
    """Whether a field has an alias: the stored JSON names fields by name (what pydantic
    dumps unless told otherwise), so reading accepts names as well as aliases."""

    def __init_subclass__(
        cls, *, registry: EventRegistry | None = _DEFAULT_REGISTRY, **kwargs: Any
    ):
        super().__init_subclass__(**kwargs)
        cls.__event_registry_implicit__ = registry is _DEFAULT_REGISTRY
        if registry is _DEFAULT_REGISTRY:
            from eventsource.events.registry import default_registry

            registry = default_registry
        cls.__event_registry__ = registry

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        declared = "event_type" in inspect.get_annotations(cls)
        field = cls.model_fields["event_type"]
        if not declared or not field.default:
            # Each class is its own type: a subclass does not inherit its parent's name.
            field.default = cls.__name__
            cls.model_rebuild(force=True)
        cls.__event_computed__ = frozenset(cls.__pydantic_computed_fields__)
        cls.__event_aliased__ = any(
            f.alias is not None or f.validation_alias is not None for f in cls.model_fields.values()
        )
        registry = cls.__event_registry__
        if registry is None:
            return
        if cls.__event_registry_implicit__:
            registry.adopt(cls)
        else:
            registry.register(cls)

    @classmethod
    def type_name(cls) -> str:
        """The event type name this class is stored and registered under."""
        return str(cls.model_fields["event_type"].default)

    @classmethod
    def schema_version(cls) -> int:
        """The current schema version of this event class."""
        return int(cls.model_fields["event_version"].default)

    @property
    def is_attached(self) -> bool:
        """True once the event carries the id of the aggregate stream it belongs to."""
        return self.aggregate_id != NIL_AGGREGATE_ID

    def attached(self, aggregate_id: UUID, aggregate_type: str, aggregate_version: int) -> Self:
        """A copy stamped with its stream: aggregate id, type and version.

        What `model_copy(update=...)` does for these three fields, at half the cost: every
        event an aggregate raises or a store appends unattached goes through here.
        """
        copy = _new(type(self))
        values = self.__dict__.copy()
        values["aggregate_id"] = aggregate_id
        values["aggregate_type"] = aggregate_type
        values["aggregate_version"] = aggregate_version
        _set_dict(copy, values)
        _set_fields_set(copy, self.__pydantic_fields_set__ | _STAMPED)
        extra = self.__pydantic_extra__  # the fields of a model with extra="allow"
        _set_extra(copy, None if extra is None else dict(extra))
        private = getattr(self, "__pydantic_private__", None)
        _set_private(copy, None if private is None else dict(private))
        return copy

    def with_causation(self, cause: DomainEvent) -> Self:
        """A copy caused by `cause`: same correlation id, causation id = the cause's event id."""
        return self.model_copy(
            update={"causation_id": cause.event_id, "correlation_id": cause.correlation_id}
        )

    def with_metadata(self, **metadata: Any) -> Self:
        """A copy whose metadata is extended (and overridden) by `metadata`."""
        return self.model_copy(update={"metadata": {**self.metadata, **metadata}})

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-compatible data (UUIDs and datetimes as strings), without its
        computed fields (what `from_dict` takes back)."""
        computed = type(self).__event_computed__
        return self.model_dump(mode="json", exclude=set(computed) if computed else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild an event from `to_dict` output (values of computed fields are ignored);
        invalid data raises `SerializationError`."""
        if cls.__event_computed__:
            data = {k: v for k, v in data.items() if k not in cls.__event_computed__}
        try:
            if cls.__event_aliased__:
                return cls.model_validate(data, by_alias=True, by_name=True)
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SerializationError(f"invalid data for event {cls.type_name()!r}: {exc}") from exc
