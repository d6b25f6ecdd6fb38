"""`InMemoryEventBus`: the bus contract inside one process, for tests and single-instance apps.

Messages are encoded and decoded exactly as on a broker (so a payload that would not survive
Redis does not survive here either), and the model is the brokers' one: an `InMemoryBroker`
keeps a queue per consumer group; each `InMemoryEventBus` is one consumer of one group. Buses
that share a broker behave like services sharing Redis; a bus made without one gets a private
broker.

`await bus.publish(events)` returns once every group with a running consumer has handled the
events (or given up on them), so a test can assert right after it. A handler that publishes
does not wait (that would wait on itself). A bus that was never started starts consuming at
its first publish (`auto_start`), so `bus.subscribe(...); await bus.publish(...)` just works.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

from eventsource._internal.clock import utc_now
from eventsource.bus import _wire
from eventsource.bus.interface import BusDeadLetter, EventBus, EventBusConfig, Verdict
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry

__all__ = ["InMemoryBroker", "InMemoryEventBus", "InMemoryEventBusConfig"]

_handling: ContextVar[bool] = ContextVar("eventsource_in_memory_bus_handling", default=False)


@dataclass(kw_only=True)
class InMemoryEventBusConfig(EventBusConfig):
    retry_delay: float = 0.0
    auto_start: bool = True
    """Start consuming at the first publish if `start_consuming()` was never called."""


@dataclass(eq=False)
class _Delivery:
    headers: Mapping[str, str]
    body: bytes
    done: asyncio.Future[None] | None
    attempt: int = 1
    redelivered: bool = False


@dataclass(eq=False)
class _Group:
    queue: deque[_Delivery] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    dead: list[tuple[Mapping[str, str], bytes, datetime]] = field(default_factory=list)
    running: int = 0

    def put(self, delivery: _Delivery, *, front: bool = False) -> None:
        if front:
            self.queue.appendleft(delivery)
        else:
            self.queue.append(delivery)
        self.ready.set()

    def release_waiters(self) -> None:
        """No consumer is left: publishers stop waiting (the messages stay queued)."""
        for delivery in self.queue:
            if delivery.done is not None and not delivery.done.done():
                delivery.done.set_result(None)
            delivery.done = None

    async def take(self) -> _Delivery:
        while not self.queue:
            self.ready.clear()
            await self.ready.wait()
        delivery = self.queue.popleft()
        if self.queue:
            self.ready.set()  # wake a competing consumer for the rest
        return delivery


class InMemoryBroker:
    """The shared "server" of in-memory buses: one queue per consumer group."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}

    def group(self, name: str) -> _Group:
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group()
        return group

    def publish(
        self, messages: Sequence[tuple[bytes, dict[str, str]]]
    ) -> list[asyncio.Future[None]]:
        """Queue each message for every group; the futures of groups being consumed."""
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        for group in self._groups.values():
            for body, headers in messages:
                done = loop.create_future() if group.running else None
                group.put(_Delivery(headers, body, done))
                if done is not None:
                    waits.append(done)
        return waits


class InMemoryEventBus(EventBus):
    """An in-process bus; pass one `broker` to several buses to give them shared groups."""

    config: InMemoryEventBusConfig

    def __init__(
        self,
        config: InMemoryEventBusConfig | None = None,
        *,
        broker: InMemoryBroker | None = None,
        registry: EventRegistry | None = None,
    ) -> None:
        super().__init__(config or InMemoryEventBusConfig(), registry)
        self.broker = broker or InMemoryBroker()
        self._group = self.broker.group(self.config.broker_group)
        self._task: asyncio.Task[None] | None = None
        self._in_flight: _Delivery | None = None
        self._stopping = False
        self._ever_started = False

    async def _publish(self, events: Sequence[DomainEvent]) -> None:
        if self.config.auto_start and not self._ever_started and self._handlers_exist():
            await self.start_consuming()
        waits = self.broker.publish(_wire.encode_all(events))
        self.stats.published += len(events)
        if waits and not _handling.get():
            await asyncio.gather(*waits)

    def _handlers_exist(self) -> bool:
        return bool(self.subscribed_types) or self.wants_everything

    @property
    def consuming(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start_consuming(self) -> None:
        if self.consuming:
            return
        self._ever_started = True
        self._stopping = False
        self._group.running += 1
        self._task = asyncio.create_task(self._consume(), name=f"bus:{self.config.consumer_name}")
        self._task.add_done_callback(self._consumer_gone)

    def _consumer_gone(self, task: asyncio.Task[None]) -> None:
        self._group.running -= 1
        if not self._group.running:
            self._group.release_waiters()

    async def _consume(self) -> None:
        _handling.set(True)
        while not self._stopping:
            delivery = await self._group.take()
            self._in_flight = delivery
            try:
                await self._deliver(delivery)
            except asyncio.CancelledError:
                delivery.redelivered = True
                self._group.put(delivery, front=True)  # not acknowledged: redelivered
                raise
            finally:
                self._in_flight = None

    async def _deliver(self, delivery: _Delivery) -> None:
        if delivery.redelivered:
            self.stats.recovered += 1
            delivery.redelivered = False
        outcome = await self._handle_message(
            delivery.headers, delivery.body, delivery.attempt, f"in-memory delivery {id(delivery)}"
        )
        if outcome.verdict is Verdict.RETRY:
            attempt = delivery.attempt + 1
            delivery.attempt = attempt
            delivery.headers = self._retry_headers(delivery.headers, outcome, attempt)
            asyncio.get_running_loop().call_later(
                self.config.delay_before(attempt), self._group.put, delivery
            )
            return
        if outcome.verdict is Verdict.DEAD:
            headers = self._dead_letter_headers(delivery.headers, outcome, delivery.attempt)
            self._group.dead.append((headers, delivery.body, utc_now()))
        if delivery.done is not None and not delivery.done.done():
            delivery.done.set_result(None)

    async def stop_consuming(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        self._stopping = True
        if self._in_flight is None:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def abort(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def dead_letters(self, limit: int = 100) -> list[BusDeadLetter]:
        return [
            self._read_dead_letter(headers, body, at)
            for headers, body, at in self._group.dead[:limit]
        ]

    async def close(self) -> None:
        await super().close()
        await self.stop_consuming()
