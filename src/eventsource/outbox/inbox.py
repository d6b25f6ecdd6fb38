"""`InboxHandler`: a bus handler that processes each event once per consumer."""

from __future__ import annotations

import asyncio
from typing import Generic

from eventsource._internal.retry import backoff_delay
from eventsource.bus.interface import E, HandlerOf, invoke_handler
from eventsource.events.base import DomainEvent
from eventsource.exceptions import TransientStoreError
from eventsource.outbox.interface import InboxRepository

__all__ = ["InboxHandler"]


class InboxHandler(Generic[E]):
    """Wraps `handler` so that an event `consumer` already processed is dropped.

    Subscribe it in place of the handler: ``bus.subscribe(OrderPlaced, InboxHandler(send_mail,
    inbox, "mailer"))``. The event is recorded after the handler succeeds: a handler that
    raises is retried by the bus as usual. `consumer` names the handler's effect and must stay
    stable across deployments.

    Recording is idempotent, so a record that fails for a reason that may pass (a lost
    connection: `TransientStoreError`) is tried again, up to `record_retries` more times with
    backoff, instead of failing the delivery and running the handler a second time. A record
    whose reply was lost after it committed is found on that retry (or on the redelivery).
    """

    def __init__(
        self,
        handler: HandlerOf[E],
        inbox: InboxRepository,
        consumer: str,
        *,
        record_retries: int = 8,
        retry_base: float = 0.05,
        retry_cap: float = 2.0,
    ) -> None:
        if not consumer:
            raise ValueError("an inbox consumer needs a name")
        if record_retries < 0:
            raise ValueError(f"record_retries must be >= 0, got {record_retries}")
        self.handler = handler
        self.inbox = inbox
        self.consumer = consumer
        self.record_retries = record_retries
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.processed = 0
        self.duplicates = 0

    async def handle(self, event: E) -> None:
        if await self.inbox.contains(self.consumer, event.event_id):
            self.duplicates += 1
            return
        await invoke_handler(self.handler, event)
        await self._record(event)
        self.processed += 1

    async def _record(self, event: DomainEvent) -> None:
        attempt = 0
        while True:
            try:
                await self.inbox.record(self.consumer, event.event_id)
                return
            except TransientStoreError:
                if attempt >= self.record_retries:
                    raise
                attempt += 1
                await asyncio.sleep(
                    backoff_delay(attempt, base=self.retry_base, cap=self.retry_cap)
                )
