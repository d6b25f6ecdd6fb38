"""The stored form of events: JSON text written and read by pydantic's Rust core.

Reading an event of the current schema version is a single `model_validate_json` call (no
`json.loads` + `model_validate` double pass). Only payloads of an older version take the slow
path through the registry's upcaster chain.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry, default_registry
from eventsource.exceptions import SerializationError

__all__ = ["EventCodec"]


class EventCodec:
    """Encodes events to JSON text and decodes stored rows back into event classes."""

    __slots__ = ("_current", "_generation", "registry")

    def __init__(self, registry: EventRegistry | None = None) -> None:
        self.registry = registry if registry is not None else default_registry
        self._current: dict[tuple[str, int], type[DomainEvent]] = {}
        """(type name, current schema version) -> class: the fast path of `decode`."""
        self._generation = -1

    @staticmethod
    def encode(event: DomainEvent) -> str:
        """The stored JSON text of `event`.

        Raises `SerializationError` for an event that could be written but never read back
        alike on every backend: a float NaN or infinity (JSON has no such number) or a NUL
        character (U+0000, which PostgreSQL's jsonb and text refuse) anywhere in it.
        """
        try:
            text = event.model_dump_json()
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"event {event.event_type!r} {event.event_id} cannot be serialized to JSON: {exc}"
            ) from exc
        # Cheap scans on the hot path (a NUL is escaped, so it needs a backslash, which
        # `in` finds with memchr); the full check runs only on a possible hit.
        if (("\\" in text and "\\u0000" in text) or "NaN" in text or "Infinity" in text) and (
            problem := _unstorable(json.loads(text), "")
        ):
            raise SerializationError(
                f"event {event.event_type!r} {event.event_id} cannot be stored: {problem}. "
                "No backend can store it so that it reads back as written (JSON has no NaN "
                "or infinity, PostgreSQL refuses U+0000), so it is refused on every store "
                "before anything is written; refuse such input where it enters (for example "
                "a pydantic field with allow_inf_nan=False) or store another value (None, a "
                "Decimal, a string without NUL)"
            )
        return text

    def decode(
        self, event_type: str, event_version: int, payload: str | bytes, origin: object = None
    ) -> DomainEvent:
        """Rebuild the event of a stored row; `origin` (a position, an id) names it in errors.

        Raises `EventTypeNotFoundError` for an unregistered type, `UpcastingError` when an old
        version cannot be upcast, and `SerializationError` for a corrupt or invalid payload.
        """
        if self._generation != self.registry.generation:  # a type was (un)registered
            self._current.clear()
            self._generation = self.registry.generation
        cls = self._current.get((event_type, event_version))
        if cls is not None:
            try:
                return cls.model_validate_json(payload)
            except ValidationError as exc:
                raise self._invalid(cls, event_type, event_version, origin, exc) from exc
        cls = self.registry.get(event_type)
        current = cls.schema_version()
        try:
            if event_version == current:
                event = cls.model_validate_json(payload)
                self._current[(event_type, current)] = cls
                return event
            data: Any = json.loads(payload)
            if not isinstance(data, dict):
                raise SerializationError(
                    f"stored {event_type!r} event at {origin}: payload is not a JSON object"
                )
            data = self.registry.upcast(event_type, data, event_version, current)
            return cls.model_validate(data)
        except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._invalid(cls, event_type, event_version, origin, exc) from exc

    @staticmethod
    def _invalid(
        cls: type[DomainEvent], event_type: str, version: int, origin: object, exc: Exception
    ) -> SerializationError:
        return SerializationError(
            f"stored {event_type!r} event (schema version {version}) at {origin} "
            f"is not valid for {cls.__qualname__}: {exc}"
        )


def _unstorable(value: Any, where: str) -> str | None:
    """What in decoded JSON `value` (at path `where`) cannot be stored faithfully, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"field {where!r} is {value}"
    if isinstance(value, str):
        return f"field {where!r} contains a NUL character (U+0000)" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if "\x00" in key:
                return f"the key {path!r} contains a NUL character (U+0000)"
            if problem := _unstorable(item, path):
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if problem := _unstorable(item, f"{where}[{index}]"):
                return problem
    return None
