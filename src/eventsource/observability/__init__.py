"""OpenTelemetry tracing and metrics for eventsource (optional: the `telemetry` extra).

The library records through the OpenTelemetry API, so nothing is recorded until the
application configures an SDK, globally (`trace.set_tracer_provider`,
`metrics.set_meter_provider`) or for eventsource only with `configure_telemetry`. Without
the extra or without an SDK every instrumented call skips its telemetry after one check.

Spans (attributes below): `execute <aggregate type>` (a command, with its retries),
`load <aggregate type>`, `save <aggregate type>`, `append <aggregate type>` (the store),
`snapshot <aggregate type>`, `<bus> publish` and `<consumer group> process` (the trace
crosses the broker in the W3C `traceparent` header), `project <subscription>` (one per
delivery attempt of an event to a subscription's handler) and `outbox relay` (one per batch).

Metrics: see the `*_METRIC` names; observable ones are read when the SDK collects.
"""

from __future__ import annotations

from typing import Any

from eventsource._internal import telemetry
from eventsource._internal.optional import is_available

__all__ = [
    "AGGREGATE_TYPE",
    "APPEND_DURATION_METRIC",
    "BUS_MESSAGES_METRIC",
    "CONSUMER",
    "DLQ_SIZE_METRIC",
    "EVENTS_APPENDED_METRIC",
    "EVENT_COUNT",
    "EVENT_TYPE",
    "EXPECTED_VERSION",
    "OUTBOX_EVENTS_METRIC",
    "OUTCOME",
    "POSITION",
    "STORE",
    "STREAM_ID",
    "SUBSCRIPTION",
    "SUBSCRIPTION_EVENTS_METRIC",
    "SUBSCRIPTION_LAG_METRIC",
    "SUBSCRIPTION_STATE_METRIC",
    "TELEMETRY_AVAILABLE",
    "TENANT_ID",
    "VERSION",
    "configure_telemetry",
]

TELEMETRY_AVAILABLE: bool = is_available("opentelemetry")
"""True when `opentelemetry-api` is installed (the `telemetry` extra)."""

# Span attributes
STREAM_ID = telemetry.STREAM_ID
"""The aggregate id of the stream."""
AGGREGATE_TYPE = telemetry.AGGREGATE_TYPE
EVENT_TYPE = telemetry.EVENT_TYPE
"""One event type name, or the sorted list of an append's types."""
EVENT_COUNT = telemetry.EVENT_COUNT
VERSION = telemetry.VERSION
"""The stream version: after an append or save, as loaded, of an event or a snapshot."""
EXPECTED_VERSION = telemetry.EXPECTED_VERSION
POSITION = telemetry.POSITION
"""A global-feed position (`str(Position)`): the last one of an append, or the event's."""
TENANT_ID = telemetry.TENANT_ID
STORE = telemetry.STORE
"""The event store backend: "postgresql", "sqlite", "memory"."""
SUBSCRIPTION = telemetry.SUBSCRIPTION
"""The subscription's name (spans and subscription metrics)."""
CONSUMER = telemetry.CONSUMER
"""A bus instance's `consumer_name` (bus metrics; `messaging.consumer.group.name` is its
group)."""
OUTCOME = telemetry.OUTCOME
"""What a counted message or event came to (`processed`, `handled`, `published`, ...)."""

# Metrics
APPEND_DURATION_METRIC = telemetry.APPEND_DURATION
"""Histogram (s) of `append_events` calls, by store and aggregate type (and `error.type`)."""
EVENTS_APPENDED_METRIC = telemetry.EVENTS_APPENDED
"""Counter of appended events by store, aggregate type and event type (idempotent replays
of an earlier append are not counted)."""
SUBSCRIPTION_LAG_METRIC = telemetry.SUBSCRIPTION_LAG
"""Gauge (s) per subscription: 0 when caught up, else the age of the last event processed."""
SUBSCRIPTION_STATE_METRIC = telemetry.SUBSCRIPTION_STATE
"""Gauge per subscription and state: 1 for the current state, 0 for the others."""
SUBSCRIPTION_EVENTS_METRIC = telemetry.SUBSCRIPTION_EVENTS
"""Counter per subscription of events processed and dead-lettered (`eventsource.outcome`)."""
DLQ_SIZE_METRIC = telemetry.DLQ_SIZE
"""Gauge per subscription of dead letters waiting (status FAILED), counted by a running
`SubscriptionManager` every `metrics_interval` seconds."""
BUS_MESSAGES_METRIC = telemetry.BUS_MESSAGES
"""Counter per bus instance and consumer group of messages by outcome (`published`,
`received`, `handled`, `skipped`, `failed`, `retried`, `dead_lettered`, `recovered`)."""
OUTBOX_EVENTS_METRIC = telemetry.OUTBOX_EVENTS
"""Counter of events the outbox relays published, or failed to publish (per attempt)."""


def configure_telemetry(
    *, tracer_provider: Any = None, meter_provider: Any = None, enabled: bool = True
) -> None:
    """Record eventsource's spans and metrics with these providers instead of OpenTelemetry's
    global ones (None keeps the global one for that signal); `enabled=False` turns the
    library's telemetry off, trace-context propagation included, even when an SDK is
    configured. Without an SDK, spans are skipped but the caller's trace context still
    crosses the buses."""
    telemetry.configure(
        tracer_provider=tracer_provider, meter_provider=meter_provider, enabled=enabled
    )
