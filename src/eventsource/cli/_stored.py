"""Stored events and stores as the data commands (`streams`, `events`) show and open them.

The command line has no event classes: an event is shown from its row, never decoded. The
payload is the stored JSON (`StoredEvent.payload`: complete, the envelope columns put back
in front of the event's own fields), so an unknown type, an old schema version or even a
payload that is not JSON shows as stored instead of failing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsource.cli._ops import CommandError
from eventsource.config import create_event_store, parse_database_url
from eventsource.events import DomainEvent, EventRegistry
from eventsource.exceptions import EventTypeNotFoundError, SerializationError, StoreSchemaError
from eventsource.stores import EventStore, StoredEvent

__all__ = [
    "COLUMNS",
    "EVENT_KEYS",
    "event_fields",
    "event_line",
    "existing_sqlite_file",
    "opened_store",
    "stream_id",
]

COLUMNS = ("Version", "Position", "Type", "Schema", "Occurred at", "Payload")
"""The table columns of an event (`streams show`)."""

EVENT_KEYS = (
    "version",
    "position",
    "type",
    "schema",
    "occurred_at",
    "recorded_at",
    "stream_id",
    "aggregate_type",
    "event_id",
    "payload",
)
"""The keys of an event in JSON output (`event_fields`), in this order."""

_ENVELOPE = frozenset(DomainEvent.model_fields)
"""What the complete payload holds beside the event's own fields."""


def stream_id(text: str) -> UUID:
    """A stream id argument (argparse `type`): a UUID, else a usage error (status 2)."""
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a stream id (a UUID)") from None


@asynccontextmanager
async def opened_store(url: str) -> AsyncIterator[EventStore]:
    """The event store `url` names, closed on exit. It decodes nothing (an empty registry):
    the commands read rows. A `memory://` store or an in-memory SQLite database would start
    empty in this process, so they are refused (status 2); a SQLite file that does not
    exist is not created (status 1)."""
    database = parse_database_url(url)
    if database.backend == "memory" or database.path == ":memory:":
        raise CommandError(
            f"{database.url}: {database.description}, so this command has nothing to read; "
            "give a sqlite:///FILE or postgresql:// URL"
        )
    if database.backend == "sqlite":
        existing_sqlite_file(database.path)
    store = create_event_store(url, registry=EventRegistry())
    try:
        yield store
    finally:
        await store.close()


def existing_sqlite_file(path: str) -> None:
    """`StoreSchemaError` unless the SQLite file exists: a reader never creates one (a
    misspelt path would get an empty file)."""
    if not Path(path).exists():
        raise StoreSchemaError(
            f"no SQLite file at {Path(path).resolve()}: check the URL, or create it with "
            "`eventsource db init`"
        )


def _envelope_value(stored: StoredEvent, name: str) -> Any:
    """An id or type of the envelope, or None when even the payload lacks it."""
    try:
        return getattr(stored, name)
    except (EventTypeNotFoundError, SerializationError):
        return None


def event_fields(stored: StoredEvent) -> dict[str, Any]:
    """An event as the commands report it: envelope values, then the payload's own fields
    (the stored text itself when it is not a JSON object)."""
    text = stored.payload
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        payload: Any = {k: v for k, v in data.items() if k not in _ENVELOPE}
        occurred_at = data.get("occurred_at")
    else:
        payload, occurred_at = text, None
    return {
        "version": stored.version,
        "position": str(stored.position),
        "type": stored.event_type,
        "schema": stored.event_version,
        "occurred_at": occurred_at,
        "recorded_at": stored.recorded_at,
        "stream_id": _envelope_value(stored, "aggregate_id"),
        "aggregate_type": _envelope_value(stored, "aggregate_type"),
        "event_id": _envelope_value(stored, "event_id"),
        "payload": payload,
    }


def event_line(fields: dict[str, Any]) -> str:
    """One event on one line (`events tail`): position, time, stream and version, type and
    schema version, payload."""
    payload = fields["payload"]
    shown = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return (
        f"{fields['position']}  {fields['occurred_at'] or '-'}  {fields['stream_id']}"
        f"@{fields['version']}  {fields['type']}/v{fields['schema']}  {shown}"
    )
