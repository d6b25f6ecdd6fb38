"""`NATSEventBus` on the real NATS JetStream server: the bus contract (connections cut for
real by a TCP proxy between each bus and the server), then what only JetStream does
(subjects per aggregate, de-duplication by event id, retries held back by a NAK, the
work-queue retry stream, refusals)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import nats
import pytest
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from eventsource.bus import EventBus
from eventsource.bus.nats import NATSEventBus, NATSEventBusConfig, subject_token
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.exceptions import BusConnectionError, BusPublishError, EventBusError
from eventsource.testing import EventBusContract, contract_registry
from eventsource.testing.bus import Recorder, cart_events, eventually
from eventsource.testing.events import ItemAdded
from tests.bus._tcp_proxy import TCPProxy
from tests.docs.test_docs import DOCS, blocks

pytestmark = pytest.mark.nats

FAST: dict[str, Any] = {
    "ack_wait": 1.0,
    "fetch_wait": 0.5,
    "reconnect_timeout": 5.0,
    "reconnect_interval": 0.05,
    "request_timeout": 1.0,
}
"""Redelivery after 1 s instead of 30, so the contract's crash test stays short."""


@pytest.fixture
async def bus_prefix(nats_url: str) -> AsyncIterator[str]:
    """A subject prefix of one test; both of its streams are deleted afterwards."""
    name = f"es-test-{uuid4().hex[:12]}"
    yield name
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        for stream in (subject_token(name), f"{subject_token(name)}-groups"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
    finally:
        await client.close()


def make(url: str, prefix: str, group: str = "main", **settings: Any) -> NATSEventBus:
    config = NATSEventBusConfig(
        url=url, subject_prefix=prefix, consumer_group=group, **{**FAST, **settings}
    )
    return NATSEventBus(config, registry=contract_registry)


class TestNATSEventBus(EventBusContract):
    @pytest.fixture(autouse=True)
    async def _namespace(self, nats_url: str, bus_prefix: str) -> AsyncIterator[None]:
        self.url, self.prefix = nats_url, bus_prefix
        self.proxies: dict[int, TCPProxy] = {}
        yield
        for proxy in self.proxies.values():
            await proxy.close()

    async def create_bus(self, group: str, **settings: Any) -> EventBus:
        """A bus that reaches the server through a proxy of its own (to cut its connection)."""
        target = urlsplit(self.url)
        config = NATSEventBusConfig(
            url=self.url, subject_prefix=self.prefix, consumer_group=group, **{**FAST, **settings}
        )
        proxy = TCPProxy(target.hostname or "127.0.0.1", target.port or 4222)
        await proxy.start()
        config.url = f"nats://127.0.0.1:{proxy.port}"
        bus = NATSEventBus(config, registry=contract_registry)
        self.proxies[id(bus)] = proxy
        return bus

    async def drop_connections(self, bus: EventBus) -> None:
        assert self.proxies[id(bus)].cut() >= 1, "the bus holds no connection to cut"


@pytest.fixture
async def buses() -> AsyncIterator[list[NATSEventBus]]:
    made: list[NATSEventBus] = []
    yield made
    for bus in made:
        await asyncio.wait_for(bus.shutdown(timeout=5), 20)


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(nats_url)
    yield client.jetstream()
    await client.close()


async def _until(check: Callable[[], Awaitable[bool]], within: float = 10) -> bool:
    """Whether `check()` comes true within `within` s (acknowledgements travel on the bus's
    connection, the checks on another)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _count(items: Awaitable[list[Any]]) -> int:
    return len(await items)


async def _messages(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def test_events_land_on_their_aggregates_subject_once_per_event_id(
    nats_url: str, bus_prefix: str, buses: list[NATSEventBus], js: JetStreamContext
) -> None:
    bus = make(nats_url, bus_prefix)
    buses.append(bus)
    cart = uuid4()
    first, second = cart_events(1, 2)
    event = ItemAdded(name="once").attached(cart, "Shop.Cart", 1)
    await bus.publish([event, first])
    await bus.publish([event, second])  # a re-send of `event`: dropped by its Nats-Msg-Id
    info = await js.stream_info(bus.stream)
    assert info.state.messages == 3
    stored = await js.get_msg(bus.stream, seq=1)
    assert stored.subject == f"{bus_prefix}.Shop_2eCart.{cart}"
    assert stored.headers is not None
    assert stored.headers["Nats-Msg-Id"] == str(event.event_id)
    assert bus.event_subject(first) == f"{bus_prefix}.Cart.{first.aggregate_id}"
    unattached = ItemAdded(name="loose")
    assert bus.event_subject(unattached) == f"{bus_prefix}._.{unattached.aggregate_id}"


def test_subject_tokens_are_distinct_single_tokens() -> None:
    texts = ["Cart", "", "_", "a.b", "a_2eb", "a b", "Panier-é", "*", ">"]
    tokens = [subject_token(text) for text in texts]
    assert len(set(tokens)) == len(texts)
    assert all(token and not set(token) & set(".*> \t") for token in tokens)
    assert tokens[:2] == ["Cart", "_"]


async def test_a_retry_is_held_back_by_the_server_past_ack_wait(
    nats_url: str, bus_prefix: str, buses: list[NATSEventBus], js: JetStreamContext
) -> None:
    """The retry copy's first delivery is NAKed with the delay: the server redelivers it
    when due, even when that is longer than ack_wait, and it is not counted a recovery."""
    delay = 2.5
    bus = make(nats_url, bus_prefix, "patient", retry_delay=delay, max_attempts=2, ack_wait=1.0)
    buses.append(bus)
    recorder = Recorder(fail_times=1)
    attempts: list[float] = []

    async def handle(event: DomainEvent) -> None:
        attempts.append(time.monotonic())
        await recorder.handle(event)

    bus.subscribe(ItemAdded, handle)
    await bus.start_consuming()
    event = cart_events(1, 1)[0]
    await bus.publish([event])
    await eventually(lambda: recorder.events == [event], 30, "the retried event")
    assert attempts[1] - attempts[0] >= delay * 0.9, "a retry was delivered before it was due"
    assert (bus.stats.retried, bus.stats.recovered) == (1, 0)
    await bus.stop_consuming()  # its acknowledgements are sent: the copy left the work queue
    assert await _until(lambda: _is(_messages(js, bus.groups_stream), 0)), "the copy stayed"


async def test_dead_letters_stay_in_the_groups_stream_until_read_and_are_not_consumed(
    nats_url: str, bus_prefix: str, buses: list[NATSEventBus], js: JetStreamContext
) -> None:
    bus = make(nats_url, bus_prefix, "fragile", max_attempts=2, retry_delay=0.05)
    buses.append(bus)
    recorder = Recorder(fail_times=10**6)
    bus.subscribe(ItemAdded, recorder)
    await bus.start_consuming()
    poison = cart_events(3, 1)
    await bus.publish(poison)
    await eventually(lambda: bus.stats.dead_lettered == 3, 30, "three dead letters")
    assert await _until(lambda: _is(_count(bus.dead_letters()), 3))
    # the dead letters only: the retry copies were acknowledged and left the work queue
    assert await _until(lambda: _is(_messages(js, bus.groups_stream), 3))
    for _ in range(2):  # reading does not consume
        letters = await bus.dead_letters()
        assert [letter.event_id for letter in letters] == [e.event_id for e in poison]
    assert [letter.event_id for letter in await bus.dead_letters(limit=2)] == [
        e.event_id for e in poison[:2]
    ]
    other = make(nats_url, bus_prefix, "other")
    buses.append(other)
    assert await other.dead_letters() == []


async def test_a_new_group_starts_at_the_end_of_the_stream(
    nats_url: str, bus_prefix: str, buses: list[NATSEventBus]
) -> None:
    bus = make(nats_url, bus_prefix, "latecomers")
    buses.append(bus)
    recorder = Recorder()
    bus.subscribe(ItemAdded, recorder)
    before, after = ItemAdded(name="before"), ItemAdded(name="after")
    await bus.publish([before])
    await bus.start_consuming()
    await bus.publish([after])
    await eventually(lambda: len(recorder.events) >= 1, 10, "the later event")
    assert recorder.events == [after]


async def test_an_event_larger_than_the_server_takes_is_refused(
    nats_url: str, bus_prefix: str, buses: list[NATSEventBus], js: JetStreamContext
) -> None:
    bus = make(nats_url, bus_prefix)
    buses.append(bus)
    small, huge = ItemAdded(name="small"), ItemAdded(name="x" * 2_000_000)
    with pytest.raises(BusPublishError, match="max_payload") as caught:
        await bus.publish([small, huge])
    assert str(huge.event_id) in str(caught.value)
    assert bus.stats.published == 0
    assert (await js.stream_info(bus.stream)).state.messages == 0, "part of the batch went"


async def test_a_stream_of_that_name_with_other_subjects_is_refused(
    nats_url: str, bus_prefix: str, buses: list[NATSEventBus], js: JetStreamContext
) -> None:
    await js.add_stream(name=subject_token(bus_prefix), subjects=[f"{bus_prefix}-other.>"])
    bus = make(nats_url, bus_prefix)
    buses.append(bus)
    with pytest.raises(EventBusError, match="exists with subjects"):
        await bus.publish([ItemAdded(name="nowhere")])
    with pytest.raises(EventBusError, match="exists with subjects"):
        await bus.start_consuming()
    assert not bus.consuming


async def test_an_unreachable_server_raises_bus_connection_error(bus_prefix: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        bus = make(f"nats://127.0.0.1:{port}", bus_prefix, reconnect_timeout=0.5)
        with pytest.raises(BusConnectionError, match=f"127.0.0.1:{port}"):
            await bus.publish([ItemAdded(name="lost")])
        with pytest.raises(BusConnectionError):
            await bus.start_consuming()
        assert bus.stats.published == 0
        assert not bus.consuming
        await bus.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "redis://localhost"}, "nats:// or tls://"),
        ({"subject_prefix": "a.*"}, "not a NATS subject"),
        ({"subject_prefix": "a..b"}, "not a NATS subject"),
        ({"stream": "a.b"}, "not a valid JetStream stream name"),
        ({"batch_size": 0}, "batch_size"),
        ({"ack_wait": 0}, "must be positive"),
        ({"max_messages": 0}, "max_messages"),
    ],
)
def test_the_config_refuses_settings_that_cannot_work(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        NATSEventBusConfig(**settings)


docs_registry = EventRegistry()


class DocsOrderPlaced(DomainEvent, registry=docs_registry):
    total: int


async def test_the_docs_example_runs_as_written(nats_url: str, bus_prefix: str) -> None:
    """docs/buses.md shows the NATS example fenced ```py (it needs NATS): run it here, on
    this test's server and prefix, with the names the page defines elsewhere."""
    (block,) = [
        b for b in blocks(DOCS / "buses.md") if b.language == "py" and "NATSEventBus(" in b.source
    ]
    source = block.source.replace('"nats://localhost:4222"', repr(nats_url))
    source = source.replace('subject_prefix="shop"', f"subject_prefix={bus_prefix!r}")
    assert source.count(nats_url) == 1
    assert source.count(bus_prefix) == 1
    charged: list[DomainEvent] = []
    namespace: dict[str, Any] = {
        "registry": docs_registry,
        "OrderPlaced": DocsOrderPlaced,
        "charge_card": charged.append,
    }
    body = "".join(f"    {line}\n" for line in source.splitlines())
    exec(f"async def example():\n{body}    return bus\n", namespace)
    bus = await namespace["example"]()
    try:
        assert isinstance(bus, NATSEventBus)
        assert bus.consuming
        order = DocsOrderPlaced(total=12).attached(uuid4(), "Order", 1)
        await bus.publish([order])
        await eventually(lambda: charged == [order], 20, "the charge")
        assert bus.event_subject(order) == f"{bus_prefix}.Order.{order.aggregate_id}"
    finally:
        await bus.shutdown()


async def test_a_consumer_deleted_under_a_running_group_is_made_again(
    nats_url: str, bus_prefix: str, buses: list[NATSEventBus], js: JetStreamContext
) -> None:
    """Fetches on a deleted consumer only time out; the bus checks, finds it gone and joins
    again (a server keeping consumers in memory loses them in a restart the same way)."""
    bus = make(nats_url, bus_prefix, "rejoining", fetch_wait=0.2)
    buses.append(bus)
    recorder = Recorder()
    bus.subscribe(ItemAdded, recorder)
    await bus.start_consuming()
    await js.delete_consumer(bus.stream, bus.durable)
    deadline = time.monotonic() + 30
    while not recorder.events and time.monotonic() < deadline:
        await bus.publish([ItemAdded(name="after the deletion")])
        await asyncio.sleep(0.5)
    assert recorder.events, "the group never came back"
    assert (await js.consumer_info(bus.stream, bus.durable)).name == bus.durable


async def test_existing_streams_are_used_as_they_are(
    nats_url: str, bus_prefix: str, buses: list[NATSEventBus], js: JetStreamContext
) -> None:
    """Stream settings apply when the bus creates the streams; a bus configured otherwise
    later uses them as they are instead of failing."""
    first = make(nats_url, bus_prefix)
    later = make(nats_url, bus_prefix, "later", max_age=3600.0, duplicate_window=30.0)
    buses.extend([first, later])
    await first.publish([ItemAdded(name="first")])
    await later.publish([ItemAdded(name="later")])
    info = await js.stream_info(first.stream)
    assert info.state.messages == 2
    assert info.config.max_age in (None, 0)
