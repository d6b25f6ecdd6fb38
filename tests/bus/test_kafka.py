"""`KafkaEventBus` against the session's Kafka-compatible broker: the bus contract, then what
Kafka adds (per-aggregate order across competing consumers, commits after handling, retries
that wait for their due time) and an unreachable broker."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from subprocess import DEVNULL, PIPE
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from eventsource.bus import EventBus
from eventsource.bus.kafka import KafkaEventBus, KafkaEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.exceptions import BusConnectionError, BusPublishError
from eventsource.testing import EventBusContract, contract_registry
from eventsource.testing.bus import Recorder, cart_events, eventually
from eventsource.testing.events import ItemAdded

pytestmark = [pytest.mark.kafka, pytest.mark.asyncio]

# Tansu (the session broker) waits max(1 s, session timeout / 2) for members before each group
# generation, so a short session keeps every join at about a second.
FAST_GROUPS: dict[str, Any] = {"session_timeout": 1.0, "heartbeat_interval": 0.2}
# Tansu 0.6 answers aiokafka's InitProducerId (version 0) with an error, so its producers
# cannot be idempotent; see test_an_idempotent_producer_works_or_says_why.
NO_IDEMPOTENCE: dict[str, Any] = {"enable_idempotence": False}


@pytest.fixture
async def topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    """A fresh events topic name; it and every topic named after it are deleted afterwards."""
    name = f"es-test-{uuid4().hex[:12]}"
    yield name
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t == name or t.startswith(f"{name}.")]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


def _client_sockets(bus: KafkaEventBus) -> list[Any]:
    """The transports of every broker connection `bus` holds (producer, consumer, admin)."""
    transports = []
    for client in (bus._producer, bus._consumer, bus._admin):
        for conn in getattr(getattr(client, "_client", None), "_conns", {}).values():
            writer = getattr(conn, "_writer", None)
            if writer is not None:
                transports.append(writer.transport)
    return transports


class TestKafkaEventBus(EventBusContract):
    @pytest.fixture(autouse=True)
    def _namespace(self, kafka_bootstrap: str, topic: str) -> None:
        self.bootstrap = kafka_bootstrap
        self.topic = topic

    async def create_bus(self, group: str, **settings: Any) -> EventBus:
        config = KafkaEventBusConfig(
            bootstrap_servers=self.bootstrap,
            topic=self.topic,
            consumer_group=group,
            **FAST_GROUPS,
            **NO_IDEMPOTENCE,
            **settings,
        )
        return KafkaEventBus(config, registry=contract_registry)

    async def drop_connections(self, bus: EventBus) -> None:
        """Destroy both ends of every TCP connection of `bus` in the kernel (`ss -K`, as a
        network failure would); without the privilege for that, abort them on our side."""
        assert isinstance(bus, KafkaEventBus)
        transports = _client_sockets(bus)
        ports = [t.get_extra_info("sockname")[1] for t in transports if not t.is_closing()]
        assert ports, "the bus holds no connection to drop"
        clauses = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
        ss = await asyncio.create_subprocess_exec(
            "ss", "-K", "-tn", f"( {clauses} )", stdout=PIPE, stderr=DEVNULL
        )
        listed, _ = await ss.communicate()
        if ss.returncode != 0 or listed.count(b"\n") < 2:  # only a header: nothing destroyed
            for transport in transports:
                transport.abort()
        await asyncio.sleep(0.05)


def _config(bootstrap: str, topic: str, group: str, **settings: Any) -> KafkaEventBusConfig:
    settings = {**FAST_GROUPS, **NO_IDEMPOTENCE, "retry_delay": 0.05, **settings}
    return KafkaEventBusConfig(
        bootstrap_servers=bootstrap, topic=topic, consumer_group=group, **settings
    )


async def test_one_aggregates_events_stay_in_order_across_competing_consumers(
    kafka_bootstrap: str, topic: str
) -> None:
    consumers, seen = [], []
    for _ in range(2):
        bus = KafkaEventBus(_config(kafka_bootstrap, topic, "workers"), registry=contract_registry)
        recorder = Recorder()
        bus.subscribe(ItemAdded, recorder)
        await bus.start_consuming()
        consumers.append(bus)
        seen.append(recorder)
    publisher = KafkaEventBus(_config(kafka_bootstrap, topic, "publisher"))
    events = cart_events(24, 10)
    try:
        for start in range(0, len(events), 16):
            await publisher.publish(events[start : start + 16])
        await eventually(
            lambda: sum(len(r.events) for r in seen) >= len(events), 30, "all 240 events"
        )
    finally:
        for bus in (*consumers, publisher):
            await bus.shutdown()
    owners: dict[Any, set[int]] = {}
    for n, recorder in enumerate(seen):
        for event in recorder.events:
            owners.setdefault(event.aggregate_id, set()).add(n)
        for cart in {e.aggregate_id for e in recorder.events}:
            versions = [e.aggregate_version for e in recorder.events if e.aggregate_id == cart]
            assert versions == list(range(1, 11)), f"cart {cart} out of order: {versions}"
    assert all(len(consumers_of) == 1 for consumers_of in owners.values())
    assert all(recorder.events for recorder in seen), "one consumer got nothing"


async def _committed(bootstrap: str, config: KafkaEventBusConfig) -> int:
    """Messages of the events topic the group has committed, over all partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = [TopicPartition(config.topic, p) for p in range(config.partitions)]
        offsets = await admin.list_consumer_group_offsets(config.group_id, partitions=partitions)
    finally:
        await admin.close()
    return sum(max(0, o.offset) for o in offsets.values())


async def test_offsets_are_committed_only_once_the_handler_is_done(
    kafka_bootstrap: str, topic: str
) -> None:
    config = _config(kafka_bootstrap, topic, "ledger")
    doomed = KafkaEventBus(config, registry=contract_registry)
    handled: list[DomainEvent] = []
    stuck = asyncio.Event()

    async def handle(event: DomainEvent) -> None:
        if event.aggregate_version == 3:
            stuck.set()
            await asyncio.Event().wait()
        handled.append(event)

    doomed.subscribe(ItemAdded, handle)
    await doomed.start_consuming()
    publisher = KafkaEventBus(_config(kafka_bootstrap, topic, "publisher"))
    events = cart_events(1, 5)
    survivor = KafkaEventBus(config, registry=contract_registry)
    try:
        await publisher.publish(events[:2])
        await eventually(lambda: len(handled) == 2, 30, "the first two events")
        committed = 0
        while committed < 2:
            committed = await _committed(kafka_bootstrap, config)
        await publisher.publish(events[2:])
        await asyncio.wait_for(stuck.wait(), 30)
        assert await _committed(kafka_bootstrap, config) == 2, "committed before handling"
        await doomed.abort()
        recorder = Recorder()
        survivor.subscribe(ItemAdded, recorder)
        await survivor.start_consuming()
        await eventually(lambda: len(recorder.events) >= 3, 30, "the redelivery")
        assert recorder.ids == [e.event_id for e in events[2:]]
        assert survivor.stats.recovered == 1
    finally:
        for bus in (doomed, survivor, publisher):
            await bus.shutdown()


async def test_a_retry_waits_until_due_without_holding_back_later_events(
    kafka_bootstrap: str, topic: str
) -> None:
    delay = 1.5
    bus = KafkaEventBus(
        _config(kafka_bootstrap, topic, "patient", retry_delay=delay, max_attempts=2),
        registry=contract_registry,
    )
    first, later = cart_events(1, 2)
    recorder = Recorder(fail_times=1, fail_for={first.event_id})
    attempts: list[float] = []

    async def handle(event: DomainEvent) -> None:
        if event.event_id == first.event_id:
            attempts.append(time.monotonic())
        await recorder.handle(event)

    bus.subscribe(ItemAdded, handle)
    await bus.start_consuming()
    try:
        await bus.publish([first, later])
        await eventually(lambda: len(recorder.events) == 2, 30, "the retried event")
    finally:
        await bus.shutdown()
    # The retry comes after the aggregate's later event: retries break per-aggregate order.
    assert recorder.ids == [later.event_id, first.event_id]
    assert attempts[1] - attempts[0] >= delay * 0.9, "a retry was delivered before it was due"
    assert bus.stats.retried == 1


async def test_a_new_group_starts_at_the_end_unless_told_to_read_the_history(
    kafka_bootstrap: str, topic: str
) -> None:
    publisher = KafkaEventBus(_config(kafka_bootstrap, topic, "publisher"))
    history, news = cart_events(1, 3), ItemAdded(name="news")
    recorders: dict[str, Recorder] = {}
    buses = [publisher]
    try:
        for event in history:
            # One record per batch: Tansu 0.6 reports a partition's end as the base offset of
            # its last batch plus one, so the end of a multi-record batch would be misplaced.
            await publisher.publish([event])
        for group, start in (("latecomers", "latest"), ("historians", "earliest")):
            bus = KafkaEventBus(
                _config(kafka_bootstrap, topic, group, auto_offset_reset=start),
                registry=contract_registry,
            )
            buses.append(bus)
            recorders[group] = Recorder()
            bus.subscribe(ItemAdded, recorders[group])
            await bus.start_consuming()
        await publisher.publish([news])
        await eventually(lambda: len(recorders["historians"].events) == 4, 30, "the history")
        await eventually(lambda: len(recorders["latecomers"].events) == 1, 30, "the news")
    finally:
        for bus in buses:
            await bus.shutdown()
    assert recorders["latecomers"].ids == [news.event_id]
    assert set(recorders["historians"].ids) == {e.event_id for e in [*history, news]}


async def test_an_unreachable_broker_raises_bus_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here once the socket closes
    config = _config(f"127.0.0.1:{port}", "es-test-nowhere", "main", connect_timeout=1.0)
    bus = KafkaEventBus(config, registry=contract_registry)
    with pytest.raises(BusConnectionError, match="cannot reach Kafka"):
        await asyncio.wait_for(bus.publish([ItemAdded(name="lost")]), 15)
    with pytest.raises(BusConnectionError, match="cannot reach Kafka"):
        await asyncio.wait_for(bus.start_consuming(), 15)
    assert not bus.consuming
    await bus.close()


async def test_an_idempotent_producer_works_or_says_why(kafka_bootstrap: str, topic: str) -> None:
    bus = KafkaEventBus(
        _config(kafka_bootstrap, topic, "main", enable_idempotence=True),
        registry=contract_registry,
    )
    refusal: BusPublishError | None = None
    try:
        await bus.publish([ItemAdded(name="once")])
    except BusPublishError as exc:  # Tansu 0.6: InitProducerId refused
        refusal = exc
    finally:
        await bus.close()
    if refusal is None:
        assert bus.stats.published == 1
    else:
        assert "enable_idempotence=False" in str(refusal)
        assert bus.stats.published == 0
