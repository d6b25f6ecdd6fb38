"""`ProjectionCoordinator`: the package guide's name of `ProjectionRegistry` (the same class;
`ProjectionRegistry` is the preferred spelling, and what the guide's own example uses)."""

from eventsource.projections.registry import ProjectionRegistry

ProjectionCoordinator = ProjectionRegistry

__all__ = ["ProjectionCoordinator", "ProjectionRegistry"]
