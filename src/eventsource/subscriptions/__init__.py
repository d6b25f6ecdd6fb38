"""Subscriptions: named readers of the global feed, from a checkpoint to live, with retries,
dead letters, pause/resume, health and read-your-writes waits."""

from eventsource.subscriptions.interface import (
    AggregateParkedError,
    BatchHandler,
    CheckpointStore,
    CheckpointStrategy,
    CircuitBreaker,
    DeadLetterSink,
    EventCallback,
    NotAdmittedError,
    SubscriptionConfig,
    SubscriptionState,
)
from eventsource.subscriptions.manager import ManagerHealth, RebuildProgress, SubscriptionManager
from eventsource.subscriptions.subscription import Subscription, SubscriptionHealth

__all__ = [
    "AggregateParkedError",
    "BatchHandler",
    "CheckpointStore",
    "CheckpointStrategy",
    "CircuitBreaker",
    "DeadLetterSink",
    "EventCallback",
    "ManagerHealth",
    "NotAdmittedError",
    "RebuildProgress",
    "Subscription",
    "SubscriptionConfig",
    "SubscriptionHealth",
    "SubscriptionManager",
    "SubscriptionState",
]
