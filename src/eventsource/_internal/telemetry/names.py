"""Span attribute and metric names (documented in `eventsource.observability`)."""

from __future__ import annotations

from typing import Final

SCOPE = "eventsource"
TRACEPARENT = "traceparent"


STREAM_ID: Final = "eventsource.stream.id"
AGGREGATE_TYPE: Final = "eventsource.aggregate.type"
EVENT_TYPE: Final = "eventsource.event.type"
EVENT_COUNT: Final = "eventsource.event.count"
VERSION: Final = "eventsource.stream.version"
EXPECTED_VERSION: Final = "eventsource.stream.expected_version"
POSITION: Final = "eventsource.position"
TENANT_ID: Final = "eventsource.tenant.id"
STORE: Final = "eventsource.store"
SUBSCRIPTION: Final = "eventsource.subscription"
STATE: Final = "eventsource.subscription.state"
CONSUMER_GROUP: Final = "messaging.consumer.group.name"
CONSUMER: Final = "eventsource.consumer"
BUS: Final = "eventsource.bus"
OUTCOME: Final = "eventsource.outcome"
ERROR_TYPE: Final = "error.type"

APPEND_DURATION: Final = "eventsource.append.duration"
EVENTS_APPENDED: Final = "eventsource.events.appended"
SUBSCRIPTION_LAG: Final = "eventsource.subscription.lag"
SUBSCRIPTION_STATE: Final = "eventsource.subscription.state"
SUBSCRIPTION_EVENTS: Final = "eventsource.subscription.events"
DLQ_SIZE: Final = "eventsource.dlq.size"
BUS_MESSAGES: Final = "eventsource.bus.messages"
OUTBOX_EVENTS: Final = "eventsource.outbox.events"

APPEND_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
