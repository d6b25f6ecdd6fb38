"""OpenTelemetry spans, metrics and trace-context propagation, when OpenTelemetry is installed.

Without `opentelemetry-api` (the `telemetry` extra), or with it but no SDK configured, every
function here returns at once: `tracer()` and `instruments()` are None and the operations
are a shared no-op object, so the hot paths pay one provider check per call. With an SDK
(the application sets global providers, or passes its own to `configure`), the stores,
repositories, subscriptions, buses and the outbox relay record the spans and metrics named in
`eventsource.observability`.

Observable instruments read the objects registered with `watch` (running subscriptions,
buses, relays, subscription managers), so a metric costs nothing until it is collected.
"""

from eventsource._internal.telemetry._api import configure, tracer
from eventsource._internal.telemetry.metrics import Instruments, instruments, unwatch, watch
from eventsource._internal.telemetry.names import (
    AGGREGATE_TYPE,
    APPEND_BUCKETS,
    APPEND_DURATION,
    BUS,
    BUS_MESSAGES,
    CONSUMER,
    CONSUMER_GROUP,
    DLQ_SIZE,
    ERROR_TYPE,
    EVENT_COUNT,
    EVENT_TYPE,
    EVENTS_APPENDED,
    EXPECTED_VERSION,
    OUTBOX_EVENTS,
    OUTCOME,
    POSITION,
    SCOPE,
    STATE,
    STORE,
    STREAM_ID,
    SUBSCRIPTION,
    SUBSCRIPTION_EVENTS,
    SUBSCRIPTION_LAG,
    SUBSCRIPTION_STATE,
    TENANT_ID,
    TRACEPARENT,
    VERSION,
)
from eventsource._internal.telemetry.spans import (
    Append,
    Operation,
    annotate,
    appending,
    consuming,
    event_attributes,
    inject,
    operation,
    publishing,
    start_span,
)

__all__ = [
    "AGGREGATE_TYPE",
    "APPEND_BUCKETS",
    "APPEND_DURATION",
    "BUS",
    "BUS_MESSAGES",
    "CONSUMER",
    "CONSUMER_GROUP",
    "DLQ_SIZE",
    "ERROR_TYPE",
    "EVENTS_APPENDED",
    "EVENT_COUNT",
    "EVENT_TYPE",
    "EXPECTED_VERSION",
    "OUTBOX_EVENTS",
    "OUTCOME",
    "POSITION",
    "SCOPE",
    "STATE",
    "STORE",
    "STREAM_ID",
    "SUBSCRIPTION",
    "SUBSCRIPTION_EVENTS",
    "SUBSCRIPTION_LAG",
    "SUBSCRIPTION_STATE",
    "TENANT_ID",
    "TRACEPARENT",
    "VERSION",
    "Append",
    "Instruments",
    "Operation",
    "annotate",
    "appending",
    "configure",
    "consuming",
    "event_attributes",
    "inject",
    "instruments",
    "operation",
    "publishing",
    "start_span",
    "tracer",
    "unwatch",
    "watch",
]
