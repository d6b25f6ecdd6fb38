"""Projections: `Projection`, `DeclarativeProjection` with `@handles`, `ProjectionRegistry`."""

from eventsource.events.handlers import handles
from eventsource.projections.base import DeclarativeProjection, Projection
from eventsource.projections.database import DatabaseProjection, TransactionalCheckpoints
from eventsource.projections.handlers import CheckpointTrackingProjection, EventHandlerBase
from eventsource.projections.registry import ProjectionRegistry

__all__ = [
    "CheckpointTrackingProjection",
    "DatabaseProjection",
    "DeclarativeProjection",
    "EventHandlerBase",
    "Projection",
    "ProjectionRegistry",
    "TransactionalCheckpoints",
    "handles",
]
