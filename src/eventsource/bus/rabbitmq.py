"""`RabbitMQEventBus`: consumer groups as durable queues bound to one topic exchange.

Events go to a durable topic exchange as persistent messages with the routing key
`{aggregate_type}.{event_type}`, every publish confirmed by the broker. A consumer group is a
durable queue `{exchange}.{group}` (`group` is `config.broker_group`, per tenant for a tenant
consumer) bound for the types its consumers handle (`#.{EventType}`, or `#` for a wildcard
handler), so other types never reach it; its consumers compete on it.

A failed message is published, confirmed, to a retry queue of its own group, whose messages
expire after the delay and are dead-lettered by RabbitMQ back into that group's queue only;
then the original is acknowledged. RabbitMQ expires messages at the head of a queue only, so
there is one retry queue per distinct delay: all its messages have the same time to live and
none waits behind a longer one. A message given up on goes, confirmed, to `{queue}.dlq`.

Publishing and consuming use separate connections (RabbitMQ blocks a publishing connection
under a resource alarm; acknowledgements must still flow). Both are aio-pika robust
connections: after a drop they reconnect and declare again the exchange, queues, bindings and
consumer. A message whose channel died before its acknowledgement is redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eventsource._internal.clock import utc_now
from eventsource._internal.optional import require
from eventsource._internal.retry import backoff_delay
from eventsource.bus import _wire
from eventsource.bus.interface import BusDeadLetter, EventBus, EventBusConfig, Outcome, Verdict
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.exceptions import BusConnectionError, BusPublishError, EventBusError

if TYPE_CHECKING:
    import aio_pika
    from aio_pika.abc import (
        AbstractExchange,
        AbstractIncomingMessage,
        AbstractRobustChannel,
        AbstractRobustConnection,
        AbstractRobustQueue,
    )
else:
    aio_pika = require("aio_pika", extra="rabbitmq", feature="RabbitMQEventBus")

__all__ = ["RabbitMQEventBus", "RabbitMQEventBusConfig"]

logger = logging.getLogger(__name__)

_LOST = (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS)
"""What an operation raises when its connection or channel is gone."""


@dataclass(kw_only=True)
class RabbitMQEventBusConfig(EventBusConfig):
    url: str = field(default="amqp://guest:guest@localhost/", repr=False)
    """Kept out of the repr: it holds the password."""
    exchange: str = "eventsource.events"
    """The topic exchange; a group's queues are named after it (`{exchange}.{group}`)."""
    prefetch_count: int = 32
    """Messages the broker hands this consumer ahead of its acknowledgements."""
    heartbeat: int = 60
    """Seconds of silence after which either side considers the connection dead."""
    connect_timeout: float = 10.0
    """How long connecting may take, retries included, before `BusConnectionError`."""
    reconnect_interval: float = 1.0
    """Pause between attempts to re-make a dropped connection."""
    publish_timeout: float = 30.0
    """How long one publish may wait for confirms and for a dropped connection to return."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if urlsplit(self.url).scheme not in ("amqp", "amqps"):
            raise ValueError(f"url must be an amqp:// or amqps:// URL, not {self.url!r}")
        if not self.exchange:
            raise ValueError("exchange must not be empty")
        if self.prefetch_count < 1:
            raise ValueError(f"prefetch_count must be at least 1, not {self.prefetch_count}")
        if min(self.connect_timeout, self.reconnect_interval, self.publish_timeout) <= 0:
            raise ValueError("connect_timeout, reconnect_interval and publish_timeout must be > 0")


class _Link:
    """A robust connection and its one channel, made on first use. The connection carries
    the bus's name, so operators (and tests) can find it in `rabbitmqctl list_connections`."""

    def __init__(self, config: RabbitMQEventBusConfig, role: str, *, confirms: bool) -> None:
        self._config = config
        self._confirms = confirms
        self.name = f"eventsource {role} {config.broker_group} {config.consumer_name}"
        self._lock = asyncio.Lock()
        self.connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None

    async def channel(self, deadline: float | None = None) -> AbstractRobustChannel:
        """The channel, connected first if need be; while aio-pika re-makes a dropped
        connection, waits for it until `deadline` (loop time)."""
        async with self._lock:
            if self._channel is None:
                self.connection = await self._connect()
                channel = self.connection.channel(
                    publisher_confirms=self._confirms, on_return_raises=self._confirms
                )
                try:
                    await channel
                except _LOST as exc:
                    await self.close()
                    raise BusConnectionError(f"cannot open a channel on {self}: {exc!r}") from exc
                self._channel = channel
        channel = self._channel
        if channel.is_closed:
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(channel.ready(), deadline and deadline - loop.time())
            except TimeoutError as exc:
                raise BusConnectionError(f"lost {self} and could not connect again") from exc
        return channel

    async def _connect(self) -> AbstractRobustConnection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.connect_timeout
        failures = 0
        while True:
            try:
                return await aio_pika.connect_robust(
                    self._config.url,
                    client_properties={"connection_name": self.name},
                    timeout=max(0.05, deadline - loop.time()),
                    heartbeat=self._config.heartbeat,
                    reconnect_interval=self._config.reconnect_interval,
                )
            except aio_pika.exceptions.AuthenticationError as exc:
                raise BusConnectionError(f"{self} refused the credentials: {exc}") from exc
            except _LOST as exc:
                failures += 1
                pause = backoff_delay(failures, base=0.05, cap=1.0)
                if loop.time() + pause >= deadline:
                    raise BusConnectionError(
                        f"cannot connect to {self} within {self._config.connect_timeout} s "
                        f"({exc!r}); check the URL and that the broker is running"
                    ) from exc
                await asyncio.sleep(pause)

    async def close(self) -> None:
        connection, self.connection, self._channel = self.connection, None, None
        if connection is not None:
            with contextlib.suppress(*_LOST):
                await connection.close()

    def __str__(self) -> str:
        parts = urlsplit(self._config.url)
        return f"RabbitMQ at {parts.hostname}:{parts.port or 5672} ({self.name!r})"


class RabbitMQEventBus(EventBus):
    """An `EventBus` on RabbitMQ through aio-pika (extra `rabbitmq`)."""

    config: RabbitMQEventBusConfig

    def __init__(
        self, config: RabbitMQEventBusConfig, *, registry: EventRegistry | None = None
    ) -> None:
        super().__init__(config, registry)
        self.queue = f"{config.exchange}.{config.broker_group}"
        self.dead_letter_queue = f"{self.queue}.dlq"
        delays = {_millis(config.delay_before(n)) for n in range(2, config.max_attempts + 1)}
        self._retry_queues = {ms: f"{self.queue}.retry.{ms}" for ms in sorted(delays)}
        self._publisher = _Link(config, "publisher", confirms=True)
        self._consumer = _Link(config, "consumer", confirms=False)
        self._exchange: AbstractExchange | None = None
        self._queue: AbstractRobustQueue | None = None
        self._bound: set[str] = set()
        self._binding: set[asyncio.Task[None]] = set()
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._in_flight = False
        self._stopping = False

    @property
    def queue_names(self) -> tuple[str, ...]:
        """The group's durable queues: its events, a retry queue per delay, dead letters."""
        return (self.queue, *self._retry_queues.values(), self.dead_letter_queue)

    # -- publishing ----------------------------------------------------------------------

    async def _publish(self, events: Sequence[DomainEvent]) -> None:
        if self._binding:  # a type subscribed just now: route it before publishing
            await asyncio.gather(*self._binding, return_exceptions=True)
        messages = []
        for event, (body, headers) in zip(events, _wire.encode_all(events), strict=True):
            key = f"{event.aggregate_type or '_'}.{event.event_type}"
            messages.append((_message(body, headers, str(event.event_id)), key))
        await self._confirm(messages, to_queue=False)
        self.stats.published += len(events)

    async def _confirm(
        self, messages: list[tuple[aio_pika.Message, str]], *, to_queue: bool
    ) -> None:
        """Publish in order, concurrently, and wait for every confirm. After a drop, publish
        again from the first unconfirmed message: order is kept, a later one may be doubled.

        Events go to the exchange, where those no group wants are dropped. Retries and dead
        letters go to a queue by name, `mandatory`: a missing queue fails instead of losing
        them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.publish_timeout
        failures = 0
        while True:
            channel = await self._publisher.channel(deadline)
            results: list[object]
            try:
                async with asyncio.timeout_at(deadline):
                    exchange = await self._exchange_on(channel, to_queue)
                    results = await asyncio.gather(
                        *(exchange.publish(m, key, mandatory=to_queue) for m, key in messages),
                        return_exceptions=True,
                    )
            except TimeoutError as exc:
                if channel.is_closed:
                    raise BusConnectionError(
                        f"lost {self._publisher} while publishing and could not connect again "
                        f"within {self.config.publish_timeout} s"
                    ) from exc
                raise BusPublishError(
                    f"{self._publisher} did not confirm {len(messages)} messages within "
                    f"{self.config.publish_timeout} s; they may or may not have been accepted"
                ) from exc
            except _LOST as exc:  # declaring the exchange failed: the channel is gone
                results = [exc]
            failed = next((n for n, r in enumerate(results) if isinstance(r, BaseException)), -1)
            if failed < 0:
                return
            error = results[failed]
            assert isinstance(error, BaseException)
            # A confirm cut off by the channel closing comes back as a cancelled publish.
            lost = isinstance(error, (asyncio.CancelledError, *_LOST))
            if not lost or isinstance(error, aio_pika.exceptions.DeliveryError):
                raise BusPublishError(
                    f"{self._publisher} refused message {messages[failed][0].message_id} "
                    f"(routing key {messages[failed][1]!r}): {error!r}"
                ) from error
            messages, failures = messages[failed:], failures + 1
            pause = backoff_delay(failures, base=0.05, cap=1.0)
            if loop.time() + pause >= deadline:
                raise BusConnectionError(
                    f"publishing to {self._publisher} failed ({error!r}) and the connection "
                    f"did not come back within {self.config.publish_timeout} s"
                ) from error
            logger.warning("publish to %s failed (%r); publishing again", self._publisher, error)
            await asyncio.sleep(pause)

    async def _exchange_on(self, channel: AbstractRobustChannel, default: bool) -> AbstractExchange:
        if default:
            return channel.default_exchange
        if self._exchange is None:
            with _refusals():
                self._exchange = await channel.declare_exchange(**self._exchange_spec())
        return self._exchange

    def _exchange_spec(self) -> dict[str, Any]:
        return {"name": self.config.exchange, "type": aio_pika.ExchangeType.TOPIC, "durable": True}

    # -- consuming -----------------------------------------------------------------------

    @property
    def consuming(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start_consuming(self) -> None:
        if self.consuming:
            return
        self._stopping = False
        self._loop = asyncio.get_running_loop()  # where threads' subscriptions bind the queue
        channel = await self._consumer.channel()
        try:
            await channel.set_qos(prefetch_count=self.config.prefetch_count)
            with _refusals():
                exchange = await channel.declare_exchange(**self._exchange_spec())
                queue = await channel.declare_queue(self.queue, durable=True)
                back = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.queue}
                for ttl, name in self._retry_queues.items():
                    arguments = {"x-message-ttl": ttl, **back}
                    await channel.declare_queue(name, durable=True, arguments=arguments)
                await channel.declare_queue(self.dead_letter_queue, durable=True)
            self._queue, self._bound = queue, set()
            for key in sorted(self._binding_keys()):
                await queue.bind(exchange, key)
                self._bound.add(key)
            self._inbox = asyncio.Queue()
            await queue.consume(self._deliver)
        except (EventBusError, *_LOST) as exc:
            await self._drop_consumer()
            if isinstance(exc, EventBusError):
                raise
            raise BusConnectionError(f"cannot start consuming {self.queue}: {exc!r}") from exc
        self._task = asyncio.create_task(self._consume(), name=f"bus:{self.config.consumer_name}")

    def _binding_keys(self) -> set[str]:
        if self.wants_everything:
            return {"#"}
        return {f"#.{event_type}" for event_type in self.subscribed_types}

    def _subscriptions_changed(self) -> None:
        """Bind the group's queue for newly subscribed types. Never unbinds: the group's
        other consumers may still handle a type this one dropped."""
        if self._queue is not None and self._binding_keys() - self._bound:
            task = asyncio.create_task(self._bind(self._queue))
            self._binding.add(task)
            task.add_done_callback(self._binding.discard)

    async def _bind(self, queue: AbstractRobustQueue) -> None:
        failures = 0
        while queue is self._queue and (keys := self._binding_keys() - self._bound):
            try:
                for key in sorted(keys):
                    await queue.bind(self.config.exchange, key)
                    self._bound.add(key)
            except _LOST as exc:
                failures += 1
                logger.warning("binding %s failed (%r); trying again", self.queue, exc)
                await asyncio.sleep(backoff_delay(failures, base=0.1, cap=2.0))

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    async def _consume(self) -> None:
        """One message at a time, in queue order."""
        while not self._stopping:
            message = await self._inbox.get()
            if not _alive(message):
                continue  # taken on a channel that died since: the broker redelivers it
            self._in_flight = True
            try:
                await self._process(message)
            except Exception:
                logger.exception("%s: message %s failed; requeueing it", self.queue, message)
                await self._requeue(message)
            finally:
                self._in_flight = False

    async def _process(self, message: AbstractIncomingMessage) -> None:
        headers = _text_headers(message.headers)
        attempt = _attempt(headers)
        if message.redelivered:
            self.stats.recovered += 1
        origin = f"{message.message_id} in RabbitMQ queue {self.queue}"
        outcome = await self._handle_message(headers, message.body, attempt, origin)
        try:
            await self._pass_on(message, headers, outcome, attempt)
        except EventBusError as exc:
            logger.error("%s: cannot pass %s on (%s); requeueing it", self.queue, origin, exc)
            await self._requeue(message)
            return
        try:
            await message.ack()
        except _LOST as exc:
            logger.warning("%s: ack of %s failed (%r); it will come again", self.queue, origin, exc)

    async def _pass_on(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, str],
        outcome: Outcome,
        attempt: int,
    ) -> None:
        """Send a failed message to its retry or dead-letter queue, confirmed, before the
        original is acknowledged: a crash in between doubles it, never loses it."""
        message_id = message.message_id or ""
        if outcome.verdict is Verdict.RETRY:
            retry = _message(
                message.body, self._retry_headers(headers, outcome, attempt + 1), message_id
            )
            queue = self._retry_queues[_millis(self.config.delay_before(attempt + 1))]
            await self._confirm([(retry, queue)], to_queue=True)
        elif outcome.verdict is Verdict.DEAD:
            headers = self._dead_letter_headers(headers, outcome, attempt)
            dead = _message(message.body, headers, message_id, timestamp=utc_now())
            await self._confirm([(dead, self.dead_letter_queue)], to_queue=True)

    async def _requeue(self, message: AbstractIncomingMessage) -> None:
        """Give a message back for another try, after a pause: a broken retry or
        dead-letter queue must not turn into a busy loop."""
        await asyncio.sleep(backoff_delay(1, base=0.5, cap=1.0))
        with contextlib.suppress(*_LOST):
            await message.reject(requeue=True)

    async def stop_consuming(self) -> None:
        """Finishes the message in hand; the broker requeues the prefetched rest."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            self._stopping = True
            if not self._in_flight:
                task.cancel()  # waiting for a message: nothing to finish
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_consumer()

    async def abort(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_consumer()

    async def _drop_consumer(self) -> None:
        """Close the consumer connection: the broker requeues all it left unacknowledged."""
        self._queue = None
        for task in list(self._binding):
            task.cancel()
        await self._consumer.close()

    # -- dead letters and closing --------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[BusDeadLetter]:
        """Reads the group's dead-letter queue without consuming it: takes up to `limit`
        messages unacknowledged, then gives them all back, to their places in the queue."""
        deadline = asyncio.get_running_loop().time() + self.config.publish_timeout
        await self._publisher.channel(deadline)
        assert self._publisher.connection is not None
        channel = self._publisher.connection.channel(publisher_confirms=False)
        letters: list[BusDeadLetter] = []
        try:
            await channel
            queue = await channel.declare_queue(self.dead_letter_queue, durable=True, robust=False)
            last = None
            while len(letters) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                last = message
                headers, at = _text_headers(message.headers), message.timestamp or utc_now()
                letters.append(self._read_dead_letter(headers, message.body, at))
            if last is not None:
                await last.nack(multiple=True, requeue=True)
        except _LOST as exc:
            raise BusConnectionError(f"cannot read {self.dead_letter_queue}: {exc!r}") from exc
        finally:
            with contextlib.suppress(*_LOST):
                await channel.close()
        return letters

    async def close(self) -> None:
        await super().close()
        await self.stop_consuming()
        await self._publisher.close()
        self._exchange = None


def _millis(seconds: float) -> int:
    return round(seconds * 1000)


def _message(
    body: bytes, headers: Mapping[str, str], message_id: str, *, timestamp: datetime | None = None
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        headers=dict(headers),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        timestamp=timestamp,
    )


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """A declaration RabbitMQ refuses (the name exists with other settings) is a typed
    error, not a connection to re-make."""
    try:
        yield
    except aio_pika.exceptions.ChannelPreconditionFailed as exc:
        raise EventBusError(
            f"RabbitMQ refused a declaration: {exc}; delete the exchange or queue it names, "
            "or configure another exchange"
        ) from exc


def _alive(message: AbstractIncomingMessage) -> bool:
    try:
        return not message.channel.is_closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return False


def _text_headers(raw: Mapping[str, Any] | None) -> dict[str, str]:
    """AMQP header values as text: byte strings and arrays decoded, numbers written out.
    Tables and lists (RabbitMQ's `x-death`) are left out: they grow on every retry."""
    headers: dict[str, str] = {}
    for key, value in (raw or {}).items():
        if isinstance(value, bytes | bytearray):
            headers[key] = value.decode("utf-8", "replace")
        elif isinstance(value, str | int | float):
            headers[key] = str(value)
    return headers


def _attempt(headers: Mapping[str, str]) -> int:
    value = headers.get(_wire.ATTEMPT, "")
    return int(value) if value.isdigit() and int(value) > 0 else 1
