"""Projections: `Projection`, `DeclarativeProjection` with `@handles`, `ProjectionRegistry`
(also named `ProjectionCoordinator`, the package guide's name)."""

from eventsource.events.handlers import handles
from eventsource.projections.base import (
    CheckpointTrackingProjection,
    DeclarativeProjection,
    EventHandlerBase,
    Projection,
)
from eventsource.projections.coordinator import ProjectionCoordinator
from eventsource.projections.database import DatabaseProjection, TransactionalCheckpoints
from eventsource.projections.registry import ProjectionRegistry
from eventsource.protocols import EventSubscriber

__all__ = [
    "CheckpointTrackingProjection",
    "DatabaseProjection",
    "DeclarativeProjection",
    "EventHandlerBase",
    "EventSubscriber",
    "Projection",
    "ProjectionCoordinator",
    "ProjectionRegistry",
    "TransactionalCheckpoints",
    "handles",
]
