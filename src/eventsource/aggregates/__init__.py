"""Aggregates: `AggregateRoot`, `DeclarativeAggregate` and `AggregateRepository`."""

from eventsource.aggregates.base import AggregateRoot, DeclarativeAggregate, UnhandledEventPolicy
from eventsource.aggregates.repository import AggregateRepository
from eventsource.events.handlers import handles

__all__ = [
    "AggregateRepository",
    "AggregateRoot",
    "DeclarativeAggregate",
    "UnhandledEventPolicy",
    "handles",
]
