"""The lean stored form: an event's own fields as JSON, its envelope in typed columns.

A store with typed envelope columns (PostgreSQL) keeps in its payload only what the event
class adds to `DomainEvent`; ids, type, versions, timestamps, tenant, correlation, causation
and metadata live in columns. Reading such a row back must not pay for the envelope twice
(parse it from JSON, validate it again): the driver already typed the columns, and they only
ever hold what a validated event had.

`LeanPlan.of(cls)` decides once per class how its lean rows are read:

* *fast*: a validator of the class's own fields alone (the class's core schema without the
  envelope fields, so field validators, strictness and `extra` rules run in pydantic's Rust
  core as before); the envelope is put in as read. No Python validator runs on the envelope
  (the UTC conversion of `occurred_at` has already happened when the event was made).
* *careful* (`validator` None): for classes whose reading the envelope could change: a model
  validator, `model_post_init`, private attributes, a field validator on an envelope field or
  one that reads `info` (it may look at envelope values), or an envelope field of another
  type. Their rows are put back together as complete JSON (`compose`) and read as before.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from types import NoneType, UnionType
from typing import Any, NamedTuple, Union, get_args, get_origin
from uuid import UUID

from pydantic_core import SchemaValidator, to_json

from eventsource.events.base import (
    DomainEvent,
    _new,
    _set_dict,
    _set_extra,
    _set_fields_set,
    _set_private,
)

__all__ = ["ENVELOPE_FIELDS", "LeanEnvelope", "LeanPlan", "compose", "utc_from_epoch"]

ENVELOPE_FIELDS = frozenset(
    {
        "event_id",
        "event_type",
        "event_version",
        "occurred_at",
        "aggregate_id",
        "aggregate_type",
        "aggregate_version",
        "tenant_id",
        "correlation_id",
        "causation_id",
        "metadata",
    }
)
"""The `DomainEvent` fields a lean row keeps in columns rather than in its payload."""


def utc_from_epoch(seconds: float) -> datetime:
    """The UTC datetime of Unix epoch seconds, exact to the microsecond for any time a
    float8 of PostgreSQL's ``date_part('epoch', t)`` can carry (its error is far below half
    a microsecond, and this rounds to the nearest one). Several times cheaper than the
    datetime a driver builds from a binary timestamp, and cheap for the server to send."""
    return _fromtimestamp(seconds, UTC)


_fromtimestamp = datetime.fromtimestamp


class LeanEnvelope(NamedTuple):
    """The envelope columns of a lean row beyond what `StoredEvent` holds already (ids,
    type, versions). A store may build it as a plain tuple of these five values."""

    occurred_at: datetime | float
    """The time the event occurred, or its Unix epoch seconds (see `utc_from_epoch`)."""
    tenant_id: UUID | None
    correlation_id: UUID
    causation_id: UUID | None
    metadata: str | None
    """The metadata as JSON text; None when empty."""


def compose(
    payload: str,
    event_type: str,
    event_version: int,
    event_id: UUID,
    aggregate_id: UUID,
    aggregate_type: str,
    aggregate_version: int,
    envelope: LeanEnvelope,
) -> str:
    """The complete JSON of a lean row: its envelope put back in front of its fields, in the
    order and format `EventCodec.encode` writes. A payload that is not a JSON object (a
    damaged row) is returned as it is."""
    body = payload.lstrip()
    if not body.startswith("{"):
        return payload
    occurred_at, tenant_id, correlation_id, causation_id, metadata = envelope
    head = to_json(
        {
            "event_id": event_id,
            "event_type": event_type,
            "event_version": event_version,
            "occurred_at": occurred_at
            if isinstance(occurred_at, datetime)
            else utc_from_epoch(occurred_at),
            "aggregate_id": aggregate_id,
            "aggregate_type": aggregate_type,
            "aggregate_version": aggregate_version,
            "tenant_id": tenant_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
        }
    ).decode()
    if metadata is None:
        metadata = "{}"
    rest = body[1:].lstrip()
    separator = "" if rest.startswith("}") else ","
    return f'{head[:-1]},"metadata":{metadata}{separator}{rest}'


@dataclass(frozen=True, slots=True)
class LeanPlan:
    """How the lean rows of one event class are read (see the module docstring)."""

    cls: type[DomainEvent]
    validator: SchemaValidator | None
    """Validates the class's own fields; None: read through the complete JSON instead."""
    fields_set: frozenset[str]
    """Every field of the class: what a decode of the complete JSON sets. Each event gets a
    `set` copy of its own: pydantic's serializer refuses a frozenset (`exclude_unset`) and
    `model_copy(update=...)` adds to the copy's set in place."""

    @classmethod
    def of(cls, event_class: type[DomainEvent]) -> LeanPlan:
        return cls(event_class, _fields_validator(event_class), frozenset(event_class.model_fields))

    def build(
        self,
        payload: str | bytes,
        event_type: str,
        event_version: int,
        event_id: UUID,
        aggregate_id: UUID,
        aggregate_type: str,
        aggregate_version: int,
        envelope: LeanEnvelope,
    ) -> DomainEvent:
        """The event of a lean row on the fast path (`validator` set); raises pydantic's
        `ValidationError` for fields that do not validate."""
        assert self.validator is not None
        fields, extra, _ = self.validator.validate_json(payload)
        occurred_at, tenant_id, correlation_id, causation_id, metadata = envelope
        values = {
            "event_id": event_id,
            "event_type": event_type,
            "event_version": event_version,
            "occurred_at": _fromtimestamp(occurred_at, UTC)
            if type(occurred_at) is float
            else occurred_at,
            "aggregate_id": aggregate_id,
            "aggregate_type": aggregate_type,
            "aggregate_version": aggregate_version,
            "tenant_id": tenant_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "metadata": {} if metadata is None else json.loads(metadata),
        }
        values.update(fields)
        event: DomainEvent = _new(self.cls)
        _set_dict(event, values)
        _set_fields_set(event, set(self.fields_set))
        _set_extra(event, extra)
        _set_private(event, None)
        return event


def _fields_validator(event_class: type[DomainEvent]) -> SchemaValidator | None:
    """A validator of the class's own fields, or None when the class needs the careful path
    (or its core schema has a shape this does not know: careful is always correct)."""
    if not _envelope_untouched(event_class):
        return None
    try:
        schema: Any = event_class.__pydantic_core_schema__
        definitions = None
        if schema["type"] == "definitions":
            definitions, schema = schema["definitions"], schema["schema"]
        if schema["type"] != "model" or schema["cls"] is not event_class:
            return None
        inner = schema["schema"]
        if inner["type"] != "model-fields":
            return None
        own = {k: v for k, v in inner["fields"].items() if k not in ENVELOPE_FIELDS}
        fields_schema: Any = {**inner, "fields": own}
        if definitions is not None:
            fields_schema = {
                "type": "definitions",
                "schema": fields_schema,
                "definitions": definitions,
            }
        return SchemaValidator(fields_schema, schema.get("config"))
    except (KeyError, TypeError, AttributeError):
        return None


def _envelope_untouched(event_class: type[DomainEvent]) -> bool:
    """Whether the class reads like `DomainEvent` does as far as the envelope goes (and has
    no aliased field, which the complete path reads by name or alias)."""
    if event_class.__event_aliased__:
        return False
    decorators = event_class.__pydantic_decorators__
    if decorators.model_validators or event_class.__pydantic_post_init__ is not None:
        return False
    if event_class.__private_attributes__:
        return False
    for decorator in decorators.field_validators.values():
        fields = set(decorator.info.fields)
        if "*" in fields or fields & ENVELOPE_FIELDS or _takes_info(decorator.func):
            return False
    base = DomainEvent.model_fields
    for name in ENVELOPE_FIELDS:
        field = event_class.model_fields[name]
        if not _same_type(field.annotation, base[name].annotation):
            return False
        if field.metadata != base[name].metadata:
            return False
    return True


def _takes_info(function: Any) -> bool:
    """Whether a (bound) validator takes pydantic's `ValidationInfo` after the value."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) > 1


def _same_type(annotation: Any, base: Any) -> bool:
    """The base's type, or the base's optional type made required (as `TenantDomainEvent`
    does with `tenant_id`): the column's values fit it either way."""
    if annotation == base:
        return True
    if get_origin(base) in (Union, UnionType):
        return [a for a in get_args(base) if a is not NoneType] == [annotation]
    return False
