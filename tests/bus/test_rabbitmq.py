"""`RabbitMQEventBus` on the real broker: the bus contract, then what RabbitMQ itself decides
(routing by type, publisher confirms, per-delay retry queues, recovery of declarations).

Each test works under its own exchange; its queues and exchange are deleted afterwards.
Connections are cut from the server side (`rabbitmqctl close_connection`), as a broker restart
or a network failure would cut them: the buses name their connections after their consumer, so
the test finds them in `rabbitmqctl list_connections`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import aio_pika
import pytest

from eventsource.bus import EventBus
from eventsource.bus.rabbitmq import RabbitMQEventBus, RabbitMQEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import BusConnectionError, BusPublishError
from eventsource.testing import EventBusContract, contract_registry
from eventsource.testing.bus import Recorder, cart_events, eventually
from eventsource.testing.events import CartCheckedOut, ItemAdded, ItemRemoved
from tests import _services

pytestmark = pytest.mark.rabbitmq

TIMEOUT = 20.0


class Namespace:
    """One test's exchange, the buses made in it, and what to delete afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.exchange = f"es-test-{uuid4().hex[:12]}"
        self.queues: set[str] = set()

    def bus(self, group: str = "main", **settings: Any) -> RabbitMQEventBus:
        config = RabbitMQEventBusConfig(
            url=self.url, exchange=self.exchange, consumer_group=group, **settings
        )
        bus = RabbitMQEventBus(config, registry=contract_registry)
        self.queues.update(bus.queue_names)
        return bus

    async def cleanup(self) -> None:
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            for queue in self.queues:
                await channel.queue_delete(queue)
            await channel.exchange_delete(self.exchange)


@pytest.fixture
async def namespace(rabbitmq_url: str) -> AsyncIterator[Namespace]:
    ns = Namespace(rabbitmq_url)
    yield ns
    await ns.cleanup()


@pytest.fixture
async def raw(namespace: Namespace) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain aio-pika channel on the broker, to look at or meddle with the bus's queues."""
    connection = await aio_pika.connect(namespace.url)
    async with connection:
        yield await connection.channel()


async def rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        _services.unavailable("rabbitmqctl is needed to cut connections on the broker side")
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, f"rabbitmqctl {args[0]} failed: {err.decode()}"
    return out.decode()


async def drop_connections(bus: EventBus) -> None:
    """Close, on the broker, every connection the bus opened (named after its consumer)."""
    listing = await rabbitmqctl(
        "list_connections", "pid", "client_properties", "--quiet", "--no-table-headers"
    )
    name = bus.config.consumer_name
    pids = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if '{"connection_name","eventsource ' in line and f' {name}"}}' in line
    ]
    assert pids, f"no connection of {name} to drop"
    await asyncio.gather(*(rabbitmqctl("close_connection", pid, "test drop") for pid in pids))


class TestRabbitMQEventBus(EventBusContract):
    timeout = TIMEOUT
    routes_by_type = True

    @pytest.fixture(autouse=True)
    def _namespace(self, namespace: Namespace) -> None:
        self.namespace = namespace

    async def create_bus(self, group: str, **settings: Any) -> EventBus:
        return self.namespace.bus(group, reconnect_interval=0.2, **settings)

    async def drop_connections(self, bus: EventBus) -> None:
        await drop_connections(bus)


@pytest.fixture
async def make(namespace: Namespace) -> AsyncIterator[Any]:
    made: list[RabbitMQEventBus] = []

    def make(group: str = "main", **settings: Any) -> RabbitMQEventBus:
        settings.setdefault("retry_delay", 0.05)
        settings.setdefault("retry_delay_max", 0.2)
        made.append(namespace.bus(group, reconnect_interval=0.2, **settings))
        return made[-1]

    yield make
    for bus in made:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.shutdown(timeout=5), 20)


async def messages_in(raw: aio_pika.abc.AbstractChannel, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue, as the broker reports them."""
    declared = await raw.declare_queue(queue, passive=True)
    result = declared.declaration_result
    return result.message_count or 0, result.consumer_count or 0


async def test_the_group_queue_gets_only_the_subscribed_types(
    make: Any, raw: aio_pika.abc.AbstractChannel
) -> None:
    bus = make()
    added, removed = Recorder(), Recorder()
    bus.subscribe(ItemAdded, added)
    await bus.start_consuming()
    await bus.publish([ItemRemoved(name="a"), CartCheckedOut(), ItemAdded(name="a")])
    await eventually(lambda: len(added.events) == 1, TIMEOUT, "the ItemAdded")
    assert (bus.stats.received, bus.stats.skipped) == (1, 0), "an unwanted type was routed"
    bus.subscribe(ItemRemoved, removed)  # while consuming: binds the queue for it
    later = ItemRemoved(name="b")
    await bus.publish([CartCheckedOut(), later])
    await eventually(lambda: removed.events == [later], TIMEOUT, "the newly subscribed type")
    assert bus.stats.received == 2
    assert await messages_in(raw, bus.queue) == (0, 1)


async def test_a_publish_the_broker_refuses_raises_bus_publish_error(
    make: Any, namespace: Namespace, raw: aio_pika.abc.AbstractChannel
) -> None:
    bus = make("publisher")
    await bus.publish([ItemAdded(name="declares the exchange")])
    full = f"{namespace.exchange}.full"
    namespace.queues.add(full)
    queue = await raw.declare_queue(
        full, durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await queue.bind(namespace.exchange, "#")
    with pytest.raises(BusPublishError, match="refused"):
        await bus.publish([ItemAdded(name="nacked")])
    assert bus.stats.published == 1


async def test_a_short_retry_does_not_wait_behind_a_long_one(make: Any) -> None:
    """RabbitMQ expires messages at the head of a queue only: with one retry queue, a message
    waiting 0.8 s would hold back one waiting 0.1 s behind it. One queue per delay does not."""
    bus = make(max_attempts=6, retry_delay=0.1, retry_delay_max=10.0)
    slow, fast = ItemAdded(name="slow"), ItemAdded(name="fast")
    recorder = Recorder(fail_times=10**6, fail_for={slow.event_id})
    fast_attempts: list[int] = []

    async def handle(event: DomainEvent) -> None:
        if event.event_id == fast.event_id:
            fast_attempts.append(recorder.attempts[slow.event_id])
            if len(fast_attempts) == 1:
                raise RuntimeError("fails once")
        await recorder.handle(event)

    bus.subscribe(ItemAdded, handle)
    await bus.start_consuming()
    await bus.publish([slow])
    # Attempt 4 fails at ~0.7 s and waits 0.8 s for attempt 5; the fast retry waits 0.1 s.
    await eventually(lambda: recorder.attempts[slow.event_id] >= 4, TIMEOUT, "attempt 4")
    await bus.publish([fast])
    await eventually(lambda: len(fast_attempts) == 2, TIMEOUT, "the fast retry")
    assert fast_attempts == [4, 4], "the 0.1 s retry waited for the 0.8 s one"


async def test_dead_letters_are_read_without_being_taken(
    make: Any, raw: aio_pika.abc.AbstractChannel
) -> None:
    bus = make(max_attempts=1)
    events = [ItemAdded(name=f"poison {n}") for n in range(3)]
    bus.subscribe(ItemAdded, Recorder(fail_times=1))
    await bus.start_consuming()
    await bus.publish(events)
    await eventually(lambda: bus.stats.dead_lettered == 3, TIMEOUT, "3 dead letters")
    first = await bus.dead_letters()
    again = await bus.dead_letters()
    assert [letter.event_id for letter in first] == [e.event_id for e in events]
    assert [letter.event_id for letter in again] == [e.event_id for e in events]
    assert [letter.event_id for letter in await bus.dead_letters(limit=2)] == [
        e.event_id for e in events[:2]
    ]
    assert all(letter.headers["x-consumer-group"] == "main" for letter in first)
    assert (await messages_in(raw, bus.dead_letter_queue))[0] == 3


async def test_a_dead_letter_with_nowhere_to_go_stays_in_the_group_queue(
    make: Any, raw: aio_pika.abc.AbstractChannel
) -> None:
    """Dead letters are published `mandatory`: with the dead-letter queue gone, RabbitMQ
    returns the message, the bus does not acknowledge the original, and nothing is lost."""
    bus = make(max_attempts=1)
    poison = ItemAdded(name="poison")
    recorder = Recorder(fail_times=10**6)
    bus.subscribe(ItemAdded, recorder)
    await bus.start_consuming()
    await raw.queue_delete(bus.dead_letter_queue)
    await bus.publish([poison])
    await eventually(lambda: recorder.attempts[poison.event_id] >= 2, TIMEOUT, "a redelivery")
    await bus.stop_consuming()
    assert await messages_in(raw, bus.queue) == (1, 0)


async def test_stopping_finishes_and_acknowledges_the_message_in_hand(make: Any) -> None:
    first = make("workers")
    release, started = asyncio.Event(), asyncio.Event()
    finished: list[DomainEvent] = []

    async def slow(event: DomainEvent) -> None:
        started.set()
        await release.wait()
        finished.append(event)

    first.subscribe(ItemAdded, slow)
    await first.start_consuming()
    event = ItemAdded(name="in hand")
    await first.publish([event])
    await asyncio.wait_for(started.wait(), TIMEOUT)
    stopping = asyncio.create_task(first.stop_consuming())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop_consuming did not wait for the handler"
    release.set()
    await stopping
    assert finished == [event]
    second = make("workers")
    recorder = Recorder()
    second.subscribe(ItemAdded, recorder)
    await second.start_consuming()
    after = ItemAdded(name="after")
    await second.publish([after])
    await eventually(lambda: recorder.events == [after], TIMEOUT, "the next event")
    assert second.stats.recovered == 0, "the finished message was delivered again"


async def test_a_deleted_queue_is_declared_again_with_its_bindings(
    make: Any, raw: aio_pika.abc.AbstractChannel
) -> None:
    """What a broker that lost its definitions looks like to a consumer: the robust
    connection re-declares the queue, binds it and consumes again."""
    bus = make()
    recorder = Recorder()
    bus.subscribe(ItemAdded, recorder)
    await bus.start_consuming()
    await raw.queue_delete(bus.queue)
    await drop_connections(bus)

    async def consumed_again() -> None:
        consumers = 0
        while consumers < 1:
            await asyncio.sleep(0.05)
            if raw.is_closed:  # the broker closes a channel that asks for a missing queue
                await raw.reopen()
            with contextlib.suppress(aio_pika.exceptions.ChannelNotFoundEntity):
                _, consumers = await messages_in(raw, bus.queue)

    await asyncio.wait_for(consumed_again(), TIMEOUT)
    event = ItemAdded(name="after the loss")
    await bus.publish([ItemRemoved(name="not bound"), event])
    await eventually(lambda: recorder.events == [event], TIMEOUT, "the event")
    assert bus.stats.received == 1
    assert bus.consuming


async def test_messages_in_flight_when_connections_drop_are_redelivered(make: Any) -> None:
    """Cut both connections while the consumer holds prefetched, unacknowledged messages and
    the publisher keeps publishing: the broker redelivers the first, the bus publishes the
    unconfirmed rest again, and every event arrives."""
    consumer, publisher = make(prefetch_count=20), make("publisher")
    recorder = Recorder()

    async def slow(event: DomainEvent) -> None:
        await asyncio.sleep(0.005)  # slower than the publisher: a backlog builds up
        await recorder.handle(event)

    consumer.subscribe(ItemAdded, slow)
    await consumer.start_consuming()
    published: list[DomainEvent] = []
    dropped = asyncio.Event()

    async def keep_publishing() -> None:
        while not dropped.is_set():
            batch = cart_events(2, 5)
            await publisher.publish(batch)
            published.extend(batch)
            await asyncio.sleep(0.025)
        batch = cart_events(2, 5)
        await publisher.publish(batch)
        published.extend(batch)

    publishing = asyncio.create_task(keep_publishing())
    await eventually(lambda: len(recorder.events) >= 20, TIMEOUT, "the first events")
    await asyncio.gather(drop_connections(consumer), drop_connections(publisher))
    dropped.set()
    await publishing
    await eventually(
        lambda: set(recorder.ids) >= {e.event_id for e in published}, TIMEOUT, "every event"
    )
    assert consumer.stats.recovered >= 1, "nothing was redelivered after the drop"
    assert publisher.stats.published == len(published)
    assert consumer.consuming


async def test_headers_of_any_amqp_type_are_read_as_text(
    make: Any, raw: aio_pika.abc.AbstractChannel
) -> None:
    bus = make(max_attempts=3)
    failing = Recorder(fail_times=10**6)
    bus.subscribe(ItemAdded, failing)
    await bus.start_consuming()
    event = ItemAdded(name="from another client")
    # Byte arrays (AMQP type x) and numbers, as other clients write them; attempt 3 of 3.
    headers: dict[str, Any] = {
        "event-type": bytearray(b"ItemAdded"),
        "event-version": bytearray(b"1"),
        "x-attempt": 3,
    }
    exchange = await raw.get_exchange(bus.config.exchange)
    await exchange.publish(
        aio_pika.Message(EventCodec.encode(event).encode(), headers=headers), "Cart.ItemAdded"
    )
    await eventually(lambda: bus.stats.dead_lettered == 1, TIMEOUT, "the dead letter")
    (letter,) = await bus.dead_letters()
    assert failing.attempts[event.event_id] == 1, "the attempt header was not read"
    assert (letter.event_type, letter.attempts, letter.event) == ("ItemAdded", 3, event)
    assert all(isinstance(value, str) for value in letter.headers.values())


@pytest.mark.parametrize(
    "settings",
    [
        {"url": "redis://localhost"},
        {"exchange": ""},
        {"prefetch_count": 0},
        {"publish_timeout": 0},
        {"max_attempts": 0},
    ],
)
def test_config_refuses_impossible_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(settings))):
        RabbitMQEventBusConfig(**settings)


async def test_an_unreachable_broker_raises_bus_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = RabbitMQEventBusConfig(
        url=f"amqp://guest:guest@127.0.0.1:{port}/", connect_timeout=0.3, publish_timeout=0.5
    )
    bus = RabbitMQEventBus(config, registry=contract_registry)
    with pytest.raises(BusConnectionError, match=f"127.0.0.1:{port}"):
        await bus.publish([ItemAdded(name="nowhere")])
    with pytest.raises(BusConnectionError):
        await bus.start_consuming()
    assert not bus.consuming
    await bus.close()


async def test_the_bus_reconnects_after_the_broker_restarts(make: Any) -> None:
    """Restart the broker application (`rabbitmqctl stop_app` / `start_app`) under a running
    consumer and publisher: a publish made during the outage waits and goes through once the
    broker is back, the consumer reconnects by itself, and no event is lost."""
    consumer, publisher = make(), make("publisher")
    recorder = Recorder()
    consumer.subscribe(ItemAdded, recorder)
    await consumer.start_consuming()
    events = cart_events(3, 10)
    await publisher.publish(events[:10])
    await eventually(lambda: len(recorder.events) >= 10, TIMEOUT, "the first events")
    await rabbitmqctl("stop_app")
    try:
        during = asyncio.create_task(publisher.publish(events[10:20]))
        await asyncio.sleep(0.5)
        assert not during.done(), "a publish during the outage cannot have been confirmed"
    finally:
        await rabbitmqctl("start_app")
        await rabbitmqctl("await_startup")
    await asyncio.wait_for(during, TIMEOUT)
    await publisher.publish(events[20:])
    await eventually(
        lambda: set(recorder.ids) >= {e.event_id for e in events}, TIMEOUT, "all 30 events"
    )
    assert consumer.consuming
