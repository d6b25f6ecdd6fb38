"""`InboxHandler`: a bus handler that processes each event once per consumer."""

from __future__ import annotations

from eventsource.bus.interface import Handler, invoke_handler
from eventsource.events.base import DomainEvent
from eventsource.outbox.interface import InboxRepository

__all__ = ["InboxHandler"]


class InboxHandler:
    """Wraps `handler` so that an event `consumer` already processed is dropped.

    Subscribe it in place of the handler: ``bus.subscribe(OrderPlaced, InboxHandler(send_mail,
    inbox, "mailer"))``. The event is recorded after the handler succeeds: a handler that
    raises is retried by the bus as usual. `consumer` names the handler's effect and must stay
    stable across deployments.
    """

    def __init__(self, handler: Handler, inbox: InboxRepository, consumer: str) -> None:
        if not consumer:
            raise ValueError("an inbox consumer needs a name")
        self.handler = handler
        self.inbox = inbox
        self.consumer = consumer
        self.processed = 0
        self.duplicates = 0

    async def handle(self, event: DomainEvent) -> None:
        if await self.inbox.contains(self.consumer, event.event_id):
            self.duplicates += 1
            return
        await invoke_handler(self.handler, event)
        await self.inbox.record(self.consumer, event.event_id)
        self.processed += 1
