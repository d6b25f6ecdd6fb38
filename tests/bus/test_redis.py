"""`RedisEventBus`: the bus contract on a real Redis, then what only Redis Streams does
(trimming, take-over by idle time, consumer names, retries beside the pending list)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from eventsource.bus import EventBus
from eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.exceptions import BusConnectionError
from eventsource.testing import EventBusContract, contract_registry
from eventsource.testing.bus import Recorder, cart_events, eventually
from eventsource.testing.events import ItemAdded

pytestmark = pytest.mark.redis

FAST = {"claim_idle": 1.0, "claim_interval": 0.2, "block": 0.5, "reconnect_timeout": 5.0}
"""Take-over after 1 s instead of a minute, so the contract's crash test stays short."""


def make(redis_url: str, prefix: str, group: str = "main", **settings: Any) -> RedisEventBus:
    config = RedisEventBusConfig(
        url=redis_url, stream_prefix=prefix, consumer_group=group, **{**FAST, **settings}
    )
    return RedisEventBus(config, registry=contract_registry)


async def kill_clients(redis_url: str, name: str) -> int:
    """Close, server side, every connection called `name` (a network failure, for the bus)."""
    admin = aioredis.Redis.from_url(redis_url)
    try:
        ids = [c["id"] for c in await admin.client_list() if c["name"] == name]
        for client_id in ids:
            await admin.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        await admin.aclose()


class TestRedisEventBus(EventBusContract):
    @pytest.fixture(autouse=True)
    def _namespace(self, redis_url: str, prefix: str) -> None:
        self.url, self.prefix = redis_url, prefix

    async def create_bus(self, group: str, **settings: Any) -> EventBus:
        return make(self.url, self.prefix, group, **settings)

    async def drop_connections(self, bus: EventBus) -> None:
        assert isinstance(bus, RedisEventBus)
        assert await kill_clients(self.url, bus.client_name) >= 1


@pytest.fixture
async def buses(redis_url: str, prefix: str) -> AsyncIterator[list[RedisEventBus]]:
    made: list[RedisEventBus] = []
    yield made
    for bus in made:
        await asyncio.wait_for(bus.shutdown(timeout=5), 20)


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_max_stream_length_trims_the_events_stream(
    redis_url: str, prefix: str, buses: list[RedisEventBus], admin: aioredis.Redis
) -> None:
    node = int((await admin.config_get("stream-node-max-entries"))["stream-node-max-entries"])
    trimmed = make(redis_url, prefix, max_stream_length=10)
    buses.append(trimmed)
    for _ in range(5 * node // 50):
        await trimmed.publish(cart_events(1, 50))
    length = await admin.xlen(f"{prefix}:events")
    assert 10 <= length < 10 + 2 * node  # MAXLEN ~ drops whole nodes only

    untrimmed_prefix = f"{prefix}:untrimmed"
    untrimmed = make(redis_url, untrimmed_prefix)
    buses.append(untrimmed)
    await untrimmed.publish(cart_events(1, 5 * node))
    assert await admin.xlen(f"{untrimmed_prefix}:events") == 5 * node


async def test_a_retry_does_not_wait_for_the_take_over_delay(
    redis_url: str, prefix: str, buses: list[RedisEventBus]
) -> None:
    bus = make(redis_url, prefix, claim_idle=600.0, claim_interval=300.0, retry_delay=0.05)
    buses.append(bus)
    recorder = Recorder(fail_times=2)
    bus.subscribe(ItemAdded, recorder)
    await bus.start_consuming()
    event = ItemAdded(name="retried")
    await bus.publish([event])
    await eventually(lambda: recorder.events == [event], 20, "the third attempt")
    assert recorder.attempts[event.event_id] == 3
    assert bus.stats.recovered == 0


async def test_a_slow_handler_keeps_its_entry(
    redis_url: str, prefix: str, buses: list[RedisEventBus]
) -> None:
    """An entry held longer than claim_idle by a live consumer is not taken over."""
    seen: list[str] = []

    async def slow(event: DomainEvent) -> None:
        seen.append("slow")
        await asyncio.sleep(2.5)

    async def fast(event: DomainEvent) -> None:
        seen.append("fast")

    for handler in (slow, fast):
        bus = make(redis_url, prefix, "workers", claim_idle=0.6, claim_interval=0.1)
        buses.append(bus)
        bus.subscribe(ItemAdded, handler)
        await bus.start_consuming()
        if handler is slow:
            await bus.publish([ItemAdded(name="long job")])
            await eventually(lambda: seen == ["slow"], 10, "the slow handler")
    await eventually(lambda: buses[0].stats.handled == 1, 10, "the slow handler to finish")
    assert seen == ["slow"]
    assert buses[1].stats.recovered == 0


async def test_a_consumer_restarted_under_its_name_takes_back_its_entries(
    redis_url: str, prefix: str, buses: list[RedisEventBus]
) -> None:
    started = asyncio.Event()

    async def hang(event: DomainEvent) -> None:
        started.set()
        await asyncio.Event().wait()

    doomed = make(redis_url, prefix, consumer_name="worker-1", claim_idle=600.0)
    buses.append(doomed)
    doomed.subscribe(ItemAdded, hang)
    await doomed.start_consuming()
    event = ItemAdded(name="interrupted")
    await doomed.publish([event])
    await asyncio.wait_for(started.wait(), 10)
    await doomed.abort()
    again = make(redis_url, prefix, consumer_name="worker-1", claim_idle=600.0)
    buses.append(again)
    recorder = Recorder()
    again.subscribe(ItemAdded, recorder)
    await again.start_consuming()
    await eventually(lambda: recorder.events == [event], 10, "the event it held")
    assert again.stats.recovered == 1


async def test_pending_entries_trimmed_away_are_counted(
    redis_url: str, prefix: str, buses: list[RedisEventBus], admin: aioredis.Redis
) -> None:
    started = asyncio.Event()

    async def hang(event: DomainEvent) -> None:
        started.set()
        await asyncio.Event().wait()

    doomed = make(redis_url, prefix, "lagging")
    buses.append(doomed)
    doomed.subscribe(ItemAdded, hang)
    await doomed.start_consuming()
    await doomed.publish(cart_events(1, 3))
    await asyncio.wait_for(started.wait(), 10)
    await doomed.abort()
    await admin.xtrim(f"{prefix}:events", maxlen=0)
    survivor = make(redis_url, prefix, "lagging")
    buses.append(survivor)
    recorder = Recorder()
    survivor.subscribe(ItemAdded, recorder)
    await survivor.start_consuming()
    await eventually(lambda: survivor.stats.trimmed == 3, 10, "the trimmed entries")
    assert recorder.events == []
    assert await admin.xpending(f"{prefix}:events", "lagging") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_a_new_group_starts_at_the_end_of_the_stream(
    redis_url: str, prefix: str, buses: list[RedisEventBus]
) -> None:
    bus = make(redis_url, prefix, "latecomers")
    buses.append(bus)
    recorder = Recorder()
    bus.subscribe(ItemAdded, recorder)
    before, after = ItemAdded(name="before"), ItemAdded(name="after")
    await bus.publish([before])
    await bus.start_consuming()
    await bus.publish([after])
    await eventually(lambda: len(recorder.events) >= 1, 10, "the later event")
    assert recorder.events == [after]  # one consumer follows stream order: `before` came first


async def test_a_stopped_consumer_leaves_no_trace_in_its_group(
    redis_url: str, prefix: str, buses: list[RedisEventBus], admin: aioredis.Redis
) -> None:
    bus = make(redis_url, prefix, "tidy")
    buses.append(bus)
    bus.subscribe(ItemAdded, Recorder())
    await bus.start_consuming()
    assert len(await admin.xinfo_consumers(f"{prefix}:events", "tidy")) == 1
    await bus.stop_consuming()
    assert await admin.xinfo_consumers(f"{prefix}:events", "tidy") == []
    assert not bus.consuming


async def test_an_unreachable_redis_raises_bus_connection_error(prefix: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        bus = make(f"redis://127.0.0.1:{port}/0", prefix, reconnect_timeout=0.3)
        with pytest.raises(BusConnectionError, match=f"127.0.0.1:{port} unreachable"):
            await bus.publish([ItemAdded(name="lost")])
        with pytest.raises(BusConnectionError):
            await bus.start_consuming()
        assert bus.stats.published == 0
        await bus.close()


def test_the_config_refuses_settings_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="below socket_timeout"):
        RedisEventBusConfig(block=30.0, socket_timeout=10.0)
    with pytest.raises(ValueError, match="dlq_max_length"):
        RedisEventBusConfig(dlq_max_length=0)


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """This module calls the shared `redis_prefix` fixture `prefix`."""
    return redis_prefix
