"""Aggregates: `AggregateRoot`, `DeclarativeAggregate`, `AggregateRepository` and what makes
loading fast (`SnapshotPolicy`, `AggregateCache`)."""

from eventsource.aggregates.base import AggregateRoot, DeclarativeAggregate, UnhandledEventPolicy
from eventsource.aggregates.cache import AggregateCache
from eventsource.aggregates.repository import AggregateRepository, CommandResult, RepositoryStats
from eventsource.aggregates.snapshots import SnapshotPolicy
from eventsource.events.handlers import handles

__all__ = [
    "AggregateCache",
    "AggregateRepository",
    "CommandResult",
    "AggregateRoot",
    "DeclarativeAggregate",
    "RepositoryStats",
    "SnapshotPolicy",
    "UnhandledEventPolicy",
    "handles",
]
