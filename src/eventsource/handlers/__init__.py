"""`@handles` where the package conventions place it: the one decorator that routes events to
methods, defined in `eventsource.events.handlers`, shared by aggregates, projections and
`EventHandlerBase`. `from eventsource import handles` is the preferred import."""

from eventsource.events.handlers import handles

__all__ = ["handles"]
