"""The stored forms of events: JSON text written and read by pydantic's Rust core.

The *complete* form (`encode` / `decode`) is the whole event as JSON: what buses, the outbox,
dead letters, SQLite and the in-memory store keep. Reading an event of the current schema
version is a single `model_validate_json` call (no `json.loads` + `model_validate` double
pass). The *lean* form (`encode_lean` / `decode_lean`, see `_lean`) is what a store with typed
envelope columns keeps: the event's own fields only. Only payloads of an older schema version
take the slow path through the registry's upcaster chain, which receives the complete form's
dict in both cases.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_json

from eventsource.events._lean import (
    ENVELOPE_FIELDS,
    LeanEnvelope,
    LeanPlan,
    compose,
    utc_from_epoch,
)
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry, default_registry
from eventsource.exceptions import SerializationError

__all__ = ["ENVELOPE_FIELDS", "EventCodec", "LeanEnvelope", "utc_from_epoch"]

_METADATA_START = len('{"metadata":')
_ENVELOPE = set(ENVELOPE_FIELDS)  # pydantic's `exclude` wants a set
_METADATA = {"metadata"}
_EACH_ENVELOPE = {"__all__": _ENVELOPE}  # the same for every item of a list


@functools.lru_cache(maxsize=256)
def _own_fields(cls: type[DomainEvent]) -> set[str]:
    """What `encode_lean` leaves out of a `cls` event: the envelope (it has columns) and
    the computed fields (derived: never stored)."""
    return _ENVELOPE | cls.__event_computed__


@functools.lru_cache(maxsize=256)
def _list_adapter(cls: type[DomainEvent]) -> TypeAdapter[Any]:
    """Serializes a list of `cls` events in one call (built once per class)."""
    return TypeAdapter(list[cls])  # type: ignore[valid-type]


class EventCodec:
    """Encodes events to JSON text and decodes stored rows back into event classes."""

    __slots__ = ("_current", "_generation", "_plans", "registry")

    def __init__(self, registry: EventRegistry | None = None) -> None:
        self.registry = registry if registry is not None else default_registry
        self._current: dict[tuple[str, int], type[DomainEvent]] = {}
        """(type name, current schema version) -> class: the fast path of `decode`."""
        self._plans: dict[tuple[str, int], LeanPlan] = {}
        """(type name, current schema version) -> how its lean rows are read."""
        self._generation = -1

    @staticmethod
    def encode(event: DomainEvent) -> str:
        """The stored JSON text of `event`.

        Raises `SerializationError` for an event that could be written but never read back
        alike on every backend: a float NaN or infinity (JSON has no such number) or a NUL
        character (U+0000, which PostgreSQL's jsonb and text refuse) anywhere in it, or the
        first event of a class whose JSON does not read back as the event (see
        `_check_class`).
        """
        text = _complete(event)
        if type(event) not in _checked:
            _check_class(event, text)
        return text

    @staticmethod
    def encode_lean(event: DomainEvent) -> tuple[str, str | None]:
        """The lean stored form of `event`: (JSON of its own fields, JSON of its metadata or
        None when it has none); the rest of its envelope goes to typed columns. Refuses what
        `encode` refuses."""
        # The class's serializer called directly: what `model_dump_json` does, without the
        # wrapper that costs twice the serialization of a small event.
        serialize = event.__pydantic_serializer__.to_json
        cls = type(event)
        if cls not in _checked:
            _check_class(event, _complete(event))
        try:
            text = serialize(
                event, exclude=_own_fields(cls) if cls.__event_computed__ else _ENVELOPE
            ).decode()
            # the class's own serializer, so metadata reads back as `encode` would write it
            metadata = (
                serialize(event, include=_METADATA).decode()[_METADATA_START:-1]
                if event.metadata
                else None
            )
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise _unserializable(event, exc) from exc
        _storable(event, text)
        for name in ("aggregate_type", "event_type"):  # text columns: no NUL either
            if "\x00" in getattr(event, name):
                _storable(event, to_json({name: getattr(event, name)}).decode())
        if metadata is not None:
            _storable(event, metadata, "metadata")
        return text, metadata

    @staticmethod
    def encode_lean_batch(events: Sequence[DomainEvent]) -> tuple[str, list[str | None]]:
        """The lean stored form of a batch: (one JSON array of the events' own fields, each
        event's metadata JSON or None), as `encode_lean` writes them one by one, and refusing
        what it refuses.

        A batch of one class whose events have no metadata (what a command or a bulk import
        usually appends) is serialized in ONE call of pydantic's Rust core, a third of the
        cost of an event at a time; any other batch, and a batch whose JSON holds something
        that may be unstorable, goes event by event (which raises the precise error).
        """
        if events:
            cls = type(events[0])
            if cls not in _checked:
                _check_class(events[0], _complete(events[0]))
            for event in events:
                fields = event.__dict__
                if (
                    type(event) is not cls
                    or fields["metadata"]
                    or "\x00" in fields["event_type"]
                    or "\x00" in fields["aggregate_type"]
                ):
                    break
            else:
                exclude = (
                    {"__all__": _own_fields(cls)} if cls.__event_computed__ else _EACH_ENVELOPE
                )
                try:
                    text = _list_adapter(cls).dump_json(events, exclude=exclude).decode()
                except (PydanticSerializationError, TypeError, ValueError):
                    text = None  # the event by event path names the culprit
                if text is not None and not _suspect(text):
                    return text, [None] * len(events)
        payloads: list[str] = []
        metadata: list[str | None] = []
        for event in events:
            payload, meta = EventCodec.encode_lean(event)
            payloads.append(payload)
            metadata.append(meta)
        return f"[{','.join(payloads)}]", metadata

    compose = staticmethod(compose)

    def decode(
        self, event_type: str, event_version: int, payload: str | bytes, origin: object = None
    ) -> DomainEvent:
        """Rebuild the event of a stored row; `origin` (a position, an id, or a position's
        (commit, sequence) tuple) names it in errors.

        Raises `EventTypeNotFoundError` for an unregistered type, `UpcastingError` when an old
        version cannot be upcast, and `SerializationError` for a corrupt or invalid payload.
        """
        if self._generation != self.registry.generation:  # a type was (un)registered
            self._forget()
        cls = self._current.get((event_type, event_version))
        if cls is not None:
            try:
                return _validate_json(cls, payload)
            except ValidationError as exc:
                event = _without_computed(cls, payload)
                if event is None:
                    raise self._invalid(cls, event_type, event_version, origin, exc) from exc
                return event
        cls = self.registry.get(event_type)
        current = cls.schema_version()
        try:
            if event_version == current:
                try:
                    event = _validate_json(cls, payload)
                except ValidationError:
                    found = _without_computed(cls, payload)
                    if found is None:
                        raise
                    event = found
                self._current[(event_type, current)] = cls
                return event
            data: Any = json.loads(payload)
            if not isinstance(data, dict):
                raise SerializationError(
                    f"stored {event_type!r} event at {_where(origin)}: payload is not a JSON object"
                )
            data = self.registry.upcast(event_type, data, event_version, current)
            if cls.__event_computed__ and isinstance(data, dict):
                data = {k: v for k, v in data.items() if k not in cls.__event_computed__}
            if cls.__event_aliased__:
                return cls.model_validate(data, by_alias=True, by_name=True)
            return cls.model_validate(data)
        except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._invalid(cls, event_type, event_version, origin, exc) from exc

    def decode_lean(
        self,
        event_type: str,
        event_version: int,
        payload: str,
        event_id: UUID,
        aggregate_id: UUID,
        aggregate_type: str,
        aggregate_version: int,
        envelope: LeanEnvelope,
        origin: object = None,
    ) -> DomainEvent:
        """Rebuild the event of a lean row from its typed envelope columns and its payload of
        the event's own fields. Raises what `decode` raises."""
        if self._generation != self.registry.generation:  # a type was (un)registered
            self._forget()
        plan = self._plans.get((event_type, event_version))
        if plan is None:
            cls = self.registry.get(event_type)
            if event_version == cls.schema_version():
                plan = self._plans[(event_type, event_version)] = LeanPlan.of(cls)
        if plan is not None and plan.validator is not None:
            try:
                return plan.build(
                    payload,
                    event_type,
                    event_version,
                    event_id,
                    aggregate_id,
                    aggregate_type,
                    aggregate_version,
                    envelope,
                )
            except ValidationError as exc:
                if not plan.cls.__event_computed__:
                    raise self._invalid(plan.cls, event_type, event_version, origin, exc) from exc
                # maybe a payload written with the computed fields: the careful path drops them
            except (ValueError, TypeError) as exc:  # metadata that is not JSON
                raise SerializationError(
                    f"stored {event_type!r} event at {_where(origin)}: its metadata is not JSON: "
                    f"{exc}"
                ) from exc
        complete = compose(
            payload,
            event_type,
            event_version,
            event_id,
            aggregate_id,
            aggregate_type,
            aggregate_version,
            envelope,
        )
        return self.decode(event_type, event_version, complete, origin)

    def _forget(self) -> None:
        self._current.clear()
        self._plans.clear()
        self._generation = self.registry.generation

    @staticmethod
    def _invalid(
        cls: type[DomainEvent], event_type: str, version: int, origin: object, exc: Exception
    ) -> SerializationError:
        return SerializationError(
            f"stored {event_type!r} event (schema version {version}) at {_where(origin)} "
            f"is not valid for {cls.__qualname__}: {exc}"
        )


def _complete(event: DomainEvent) -> str:
    """The complete stored JSON of `event` (its computed fields left out), refusing what no
    backend could keep (`_storable`)."""
    computed = type(event).__event_computed__
    try:
        text = event.__pydantic_serializer__.to_json(
            event, exclude=set(computed) if computed else None
        ).decode()
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise _unserializable(event, exc) from exc
    return _storable(event, text)


_checked: set[type[DomainEvent]] = set()
"""Event classes whose JSON was seen to read back (`_check_class`), once per process."""


def _check_class(event: DomainEvent, text: str) -> None:
    """Refuse a class whose events' JSON does not read back, before the first one is
    stored: a field left out of the JSON that has no default (`Field(exclude=True)`) or a
    serializer that writes what the field's validation refuses would make every such event,
    and the stream it is in, unreadable. Checked on the first event of each class a process
    stores; a serializer that fails only for some values is not caught. Values that come
    back as JSON has them (a datetime in `metadata` as its text, a tuple as a list) are not
    a reason to refuse: that is what every event's JSON does."""
    cls = type(event)
    try:
        _validate_json(cls, text)
    except ValidationError as exc:
        raise SerializationError(
            f"{cls.__qualname__} events cannot be stored: the JSON pydantic writes for them "
            f"does not read back ({exc}); a field excluded from serialization needs a "
            "default, and a field serializer must write what the field accepts"
        ) from None
    _checked.add(cls)


def _validate_json(cls: type[DomainEvent], payload: str | bytes) -> DomainEvent:
    """`cls.model_validate_json(payload)`, accepting fields by name as well as by alias for a
    class with aliases (stored JSON names fields by name: what pydantic dumps by default)."""
    if cls.__event_aliased__:
        return cls.model_validate_json(payload, by_alias=True, by_name=True)
    return cls.model_validate_json(payload)


def _without_computed(cls: type[DomainEvent], payload: str | bytes) -> DomainEvent | None:
    """The event of a payload that names `cls`'s computed fields (as the library wrote them
    before it left them out), those values dropped; None when that is not what failed."""
    if not cls.__event_computed__:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not cls.__event_computed__ & data.keys():
        return None
    own = {k: v for k, v in data.items() if k not in cls.__event_computed__}
    try:
        return _validate_json(cls, json.dumps(own))
    except ValidationError:
        return None


def _where(origin: object) -> object:
    """`origin` as error messages show it: a (commit, sequence) tuple as a position token."""
    if type(origin) is tuple and len(origin) == 2:
        return f"{origin[0]}-{origin[1]}"
    return origin


def _unserializable(event: DomainEvent, exc: Exception) -> SerializationError:
    return SerializationError(
        f"event {event.event_type!r} {event.event_id} cannot be serialized to JSON: {exc}"
    )


def _storable(event: DomainEvent, text: str, where: str = "") -> str:
    """`text`, JSON written for `event` (its field `where`), unless no backend could store
    it so that it reads back as written: then `SerializationError`."""
    if _suspect(text) and (problem := _unstorable(json.loads(text), where)):
        raise SerializationError(
            f"event {event.event_type!r} {event.event_id} cannot be stored: {problem}. "
            "No backend can store it so that it reads back as written (JSON has no NaN "
            "or infinity, PostgreSQL refuses U+0000), so it is refused on every store "
            "before anything is written; refuse such input where it enters (for example "
            "a pydantic field with allow_inf_nan=False) or store another value (None, a "
            "Decimal, a string without NUL)"
        )
    return text


def _suspect(text: str) -> bool:
    """Whether JSON `text` may hold what no backend stores faithfully (NaN, an infinity, a
    NUL). Cheap scans for the hot path (a NUL is escaped, so it needs a backslash, which `in`
    finds with memchr); a hit only means "look closer" (`_unstorable`)."""
    return ("\\" in text and "\\u0000" in text) or "NaN" in text or "Infinity" in text


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
