"""`@handles` where the package guide looks for it; one decorator, defined in
`eventsource.events.handlers` and shared by aggregates and projections."""

from eventsource.events.handlers import handles

__all__ = ["handles"]
