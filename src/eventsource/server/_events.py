"""Events as the service handles them: received JSON to appendable events, stored events to
reply messages, never decoded into the application's classes (the server has none).

An incoming event becomes a `CopiedEvent` (the class the store migration appends with): its
own type name and schema version per instance and its fields kept as JSON values, so the
store writes exactly what the client encoded. The envelope fields of the message win over
the payload's, so a client in another language may send only its own fields.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from eventsource.exceptions import InvalidEventError, PermissionDeniedError, SerializationError
from eventsource.migration._rows import CopiedEvent
from eventsource.stores._grpc_wire import parse_uuid, pb, us_from_datetime
from eventsource.stores.interface import EventStore, StoredEvent

__all__ = ["fill_recorded", "incoming_event"]


def incoming_event(
    data: pb.EventData, aggregate_id: UUID, aggregate_type: str, tenant: UUID | None
) -> CopiedEvent:
    """The event to append for one `EventData` (stamped with `tenant` when it has none)."""
    try:
        fields: Any = json.loads(data.payload) if data.payload else {}
    except ValueError as exc:
        raise SerializationError(
            f"event {data.event_id or '(no id)'} of stream {aggregate_id}: the payload is not "
            f"JSON ({exc})"
        ) from None
    if not isinstance(fields, dict):
        raise SerializationError(
            f"event {data.event_id or '(no id)'} of stream {aggregate_id}: the payload must be "
            "a JSON object"
        )
    if data.event_id:
        fields["event_id"] = str(parse_uuid(data.event_id, "event_id"))
    if data.event_type:
        fields["event_type"] = data.event_type
    elif not fields.get("event_type"):
        raise InvalidEventError(f"an event of stream {aggregate_id} has no event_type")
    if data.event_version:
        fields["event_version"] = data.event_version
    fields.setdefault("aggregate_id", str(aggregate_id))
    fields.setdefault("aggregate_type", aggregate_type)
    if tenant is not None:
        own = fields.get("tenant_id")
        if not own:
            fields["tenant_id"] = str(tenant)
        elif _uuid_or_none(own) != tenant:
            raise PermissionDeniedError(
                f"event {fields.get('event_id')} names tenant {own}, but this client acts for "
                f"tenant {tenant}"
            )
    try:
        return CopiedEvent.model_validate(fields)
    except ValidationError as exc:
        raise InvalidEventError(
            f"event {fields.get('event_id')} of stream {aggregate_id} is not a valid event: "
            f"{exc.errors(include_url=False)}"
        ) from None


def _uuid_or_none(value: object) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None


async def fill_recorded(store: EventStore, stored: StoredEvent, message: pb.RecordedEvent) -> None:
    """Write a stored event into a reply's `message`, undecoded: its JSON and envelope.
    (Filled in place: building sub-messages and copying them in costs twice as much.)"""
    if stored.envelope_complete:
        event_id, aggregate_id, aggregate_type = (
            stored.event_id,
            stored.aggregate_id,
            stored.aggregate_type,
        )
    else:  # a store that leaves ids out of its feed: they are in the complete JSON
        try:
            data = json.loads(stored.payload)
            event_id = UUID(data["event_id"])
            aggregate_id = UUID(data["aggregate_id"])
            aggregate_type = str(data["aggregate_type"])
        except (ValueError, TypeError, KeyError):
            await store.load_envelope(stored)
            event_id, aggregate_id, aggregate_type = (
                stored.event_id,
                stored.aggregate_id,
                stored.aggregate_type,
            )
    event = message.event
    event.event_id = str(event_id)
    event.event_type = stored.event_type
    event.event_version = stored.event_version
    event.aggregate_id = str(aggregate_id)
    event.aggregate_type = aggregate_type
    event.aggregate_version = stored.version
    event.payload = stored.payload
    position = stored.position
    message.position.commit = position.commit
    message.position.sequence = position.sequence
    message.recorded_at_us = us_from_datetime(stored.recorded_at)
