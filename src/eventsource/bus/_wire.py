"""The wire form of an event on every broker: the JSON payload as the body, facts in headers.

The body is exactly what the event store keeps (`EventCodec.encode`), so a consumer needs no
other schema. Headers repeat the identity of the event (type, schema version, ids) so a consumer
can skip an event type it has no handler for without parsing the body, and carry the W3C trace
context so a trace continues across the broker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from eventsource._internal import telemetry
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import SerializationError

__all__ = [
    "AGGREGATE_ID",
    "ATTEMPT",
    "CORRELATION_ID",
    "ERROR",
    "EVENT_ID",
    "EVENT_TYPE",
    "EVENT_VERSION",
    "FAILED_HANDLERS",
    "GROUP",
    "HANDLED_BY",
    "RETRY_AT",
    "TENANT_ID",
    "decode",
    "encode",
    "encode_all",
    "event_type_of",
    "list_handlers",
    "listed_handlers",
]

EVENT_TYPE = "event-type"
EVENT_VERSION = "event-version"
EVENT_ID = "event-id"
AGGREGATE_ID = "aggregate-id"
AGGREGATE_TYPE = "aggregate-type"
AGGREGATE_VERSION = "aggregate-version"
CORRELATION_ID = "correlation-id"
CAUSATION_ID = "causation-id"
TENANT_ID = "tenant-id"
CONTENT_TYPE = "content-type"
ATTEMPT = "x-attempt"
"""Set on a retried message: the delivery attempt it is (2, 3, ...)."""
ERROR = "x-error"
"""Set on a dead-lettered message: why it was given up."""
RETRY_AT = "x-retry-at"
"""Set on a message waiting in a retry topic (Kafka): when it is due, in Unix seconds."""
GROUP = "x-consumer-group"
"""Set on a retried or dead-lettered message: the consumer group it belongs to."""
HANDLED_BY = "x-handled-by"
"""Set on a retried or dead-lettered message: the handlers of its group that already
succeeded on it (a JSON list of handler ids), which a retry does not run again."""
FAILED_HANDLERS = "x-failed-handlers"
"""Set on a retried or dead-lettered message: the handlers that failed on its last delivery
(a JSON list of handler ids)."""


def listed_handlers(headers: Mapping[str, str], name: str) -> frozenset[str]:
    """The handler ids listed in header `name` (none when it is absent or unreadable)."""
    try:
        ids = json.loads(headers.get(name, "[]"))
    except ValueError:
        return frozenset()
    if not isinstance(ids, list):
        return frozenset()
    return frozenset(str(handler_id) for handler_id in ids)


def list_handlers(ids: Sequence[str] | frozenset[str]) -> str:
    """The header value listing `ids`, sorted."""
    return json.dumps(sorted(ids))


def encode(event: DomainEvent) -> tuple[bytes, dict[str, str]]:
    """The body and headers of `event`, with the current trace context injected."""
    return encode_all([event])[0]


def encode_all(events: Sequence[DomainEvent]) -> list[tuple[bytes, dict[str, str]]]:
    """`encode` for a batch: the trace context is read once for all of it."""
    trace: dict[str, str] = {}
    telemetry.inject(trace)
    return [_encode(event, trace) for event in events]


def _encode(event: DomainEvent, trace: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
    headers = {
        EVENT_TYPE: event.event_type,
        EVENT_VERSION: str(event.event_version),
        EVENT_ID: str(event.event_id),
        AGGREGATE_ID: str(event.aggregate_id),
        AGGREGATE_TYPE: event.aggregate_type,
        AGGREGATE_VERSION: str(event.aggregate_version),
        CORRELATION_ID: str(event.correlation_id),
        CONTENT_TYPE: "application/json",
        **trace,
    }
    if event.causation_id is not None:
        headers[CAUSATION_ID] = str(event.causation_id)
    if event.tenant_id is not None:
        headers[TENANT_ID] = str(event.tenant_id)
    return EventCodec.encode(event).encode(), headers


def event_type_of(headers: Mapping[str, str]) -> str:
    """The event type a message carries ("" when its headers do not say)."""
    return headers.get(EVENT_TYPE, "")


def decode(
    codec: EventCodec, headers: Mapping[str, str], body: bytes, origin: object
) -> DomainEvent:
    """The event in a message; typed errors (`EventTypeNotFoundError`, `SerializationError`)
    for an unknown type or a corrupt body, as for a stored row."""
    event_type = headers.get(EVENT_TYPE)
    version = headers.get(EVENT_VERSION)
    if event_type is None or version is None or not version.isdigit():
        # A message written by something else: the body alone must say what it is.
        try:
            data = json.loads(body)
            event_type, version = str(data["event_type"]), str(int(data.get("event_version", 1)))
        except (ValueError, KeyError, TypeError) as exc:
            raise SerializationError(
                f"message {origin} has no event-type header and its body is not an event: {exc}"
            ) from exc
    return codec.decode(event_type, int(version), body, origin)
