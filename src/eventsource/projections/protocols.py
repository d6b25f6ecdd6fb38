"""`EventSubscriber` where the package guide looks for it: an object with `subscribed_to()`
and `async handle(event)`, accepted by `ProjectionRegistry` and by every bus's
`subscribe_all`. Defined once in `eventsource.protocols`."""

from eventsource.protocols import EventHandler, EventSubscriber

__all__ = ["EventHandler", "EventSubscriber"]
