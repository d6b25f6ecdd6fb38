"""Events as the migration moves and compares them: the stored row, not the decoded class.

A migration must not depend on the application's event classes (the `eventsource migrate`
command has none) nor change what it copies (decoding would run upcasters and store the
upcast form under the old schema version). So each stored event is rebuilt from its row:
the payload's JSON plus the envelope the store keeps in columns (`event_type`,
`event_version`, the stream version), as a `CopiedEvent` whose unknown fields are kept
as they are. Appending it stores the same type, schema version, ids, stream version and
fields; the application's classes read it back as they read the original.

Only when a store's payload does not carry the envelope (a stored form that keeps it in
columns only) is the event decoded, to take the envelope values from it; that needs the
classes in the migrating process's registry.

`canonical_text` is what verification hashes: the same dict with keys sorted and numbers
normalised (1e2, 100 and 100.0 read alike), so that two backends whose JSON text differs
(PostgreSQL's jsonb reorders keys and rewrites numbers) but whose events are the same
produce the same checksum.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import ConfigDict, ValidationError

from eventsource.events.base import DomainEvent
from eventsource.exceptions import MigrationError
from eventsource.stores.interface import StoredEvent

__all__ = ["CopiedEvent", "canonical_text", "copied_event", "event_id_of", "row_data"]

_ENVELOPE = ("occurred_at", "tenant_id", "correlation_id", "causation_id", "metadata")
"""Envelope fields that only the payload (or the decoded event) holds."""


class CopiedEvent(DomainEvent, registry=None):
    """A stored event re-appended as it was stored: its own type name and schema version
    per instance, its fields kept as JSON values (never registered, never decoded into)."""

    model_config = ConfigDict(frozen=True, extra="allow", ser_json_inf_nan="constants")


def row_data(stored: StoredEvent) -> dict[str, Any]:
    """The event's full JSON object: payload fields plus the envelope from the row."""
    try:
        data = json.loads(stored.payload)
    except ValueError as exc:
        raise MigrationError(
            f"stored {stored.event_type!r} event at {stored.position} has a payload that is "
            f"not JSON ({exc}); repair or remove it in the source before migrating"
        ) from None
    if not isinstance(data, dict):
        raise MigrationError(
            f"stored {stored.event_type!r} event at {stored.position}: payload is not a JSON object"
        )
    if any(name not in data for name in _ENVELOPE):
        envelope = stored.event.model_dump(mode="json", include=set(_ENVELOPE))
        data = {**envelope, **data}
    for name in ("event_id", "aggregate_id"):
        if name not in data:
            data[name] = str(getattr(stored, name))
    if "aggregate_type" not in data:
        data["aggregate_type"] = stored.aggregate_type
    data["event_type"] = stored.event_type
    data["event_version"] = stored.event_version
    data["aggregate_version"] = stored.version
    return data


def copied_event(data: dict[str, Any], stored: StoredEvent) -> CopiedEvent:
    """The `CopiedEvent` of `row_data(stored)`."""
    try:
        return CopiedEvent.model_validate(data)
    except ValidationError as exc:
        raise MigrationError(
            f"stored {stored.event_type!r} event at {stored.position} has an invalid envelope "
            f"and cannot be copied: {exc}"
        ) from None


def event_id_of(stored: StoredEvent) -> UUID:
    """The event's id without decoding it (stores that leave ids out of their feed keep
    them in the payload)."""
    if stored.envelope_complete:
        return stored.event_id
    try:
        data = json.loads(stored.payload)
        return UUID(str(data["event_id"]))
    except (ValueError, TypeError, KeyError):
        return stored.event_id


def canonical_text(data: dict[str, Any]) -> str:
    """`data` as JSON text that is equal for equal events on every backend."""
    return json.dumps(_normalised(data), sort_keys=True, separators=(",", ":"))


def _normalised(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return {"#": str(number.normalize())} if number.is_finite() else {"#": str(number)}
    if isinstance(value, dict):
        return {key: _normalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    return str(value)
