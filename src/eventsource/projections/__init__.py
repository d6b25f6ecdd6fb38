"""Projections: `Projection`, `DeclarativeProjection` with `@handles`, `ProjectionRegistry`."""

from eventsource.events.handlers import handles
from eventsource.projections.base import DeclarativeProjection, Projection
from eventsource.projections.database import DatabaseProjection, TransactionalCheckpoints
from eventsource.projections.registry import ProjectionRegistry

__all__ = [
    "DatabaseProjection",
    "DeclarativeProjection",
    "Projection",
    "ProjectionRegistry",
    "TransactionalCheckpoints",
    "handles",
]
