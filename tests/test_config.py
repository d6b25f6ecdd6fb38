"""`eventsource.config`: URLs and settings that choose backends. Parsing tables need no service
(buses are built but never connected); the round trips run on memory, SQLite, PostgreSQL and a
real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from eventsource.bus.in_memory import InMemoryEventBus, InMemoryEventBusConfig
from eventsource.config import (
    ConfigurationError,
    DatabaseURL,
    EventSourceComponents,
    EventSourceSettings,
    create_checkpoint_repository,
    create_dlq_repository,
    create_event_bus,
    create_event_store,
    create_inbox_repository,
    create_outbox_repository,
    create_snapshot_store,
    event_bus_config,
    mask_url,
    parse_database_url,
)
from eventsource.exceptions import EventSourceError
from eventsource.repositories.interface import Checkpoint
from eventsource.snapshots.interface import Snapshot
from eventsource.stores.interface import Position
from eventsource.testing import contract_registry
from eventsource.testing.bus import Recorder, eventually
from eventsource.testing.events import ItemAdded

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"postgresql://app:{SECRET}@db:5432/x", "postgresql://app:***@db:5432/x"),
        (f"amqp://guest:{SECRET}@mq/vh?exchange=e", "amqp://guest:***@mq/vh?exchange=e"),
        (f"redis://:{SECRET}@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            f"postgresql://db/x?password={SECRET}&schema=a",
            "postgresql://db/x?password=%2A%2A%2A&schema=a",
        ),
        ("redis://user@cache/0", "redis://user@cache/0"),
        ("sqlite:////var/lib/app.db", "sqlite:////var/lib/app.db"),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# -- database URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", {"backend": "memory", "outbox": False}),
        ("MEMORY://?outbox=true", {"backend": "memory", "outbox": True}),
        ("sqlite:///app.db", {"backend": "sqlite", "path": "app.db", "prefix": ""}),
        ("sqlite:////var/lib/app.db", {"backend": "sqlite", "path": "/var/lib/app.db"}),
        ("sqlite:///:memory:", {"backend": "sqlite", "path": ":memory:"}),
        (
            "sqlite+aiosqlite:///a.db?prefix=x_&outbox=1&busy_timeout=2.5&synchronous=normal",
            {"path": "a.db", "prefix": "x_", "outbox": True, "busy_timeout": 2.5,
             "synchronous": "NORMAL"},
        ),
        (
            "postgresql://app@db:5433/events",
            {"backend": "postgresql", "schema": "public", "prefix": "", "outbox": False,
             "notify": True, "driver_url": "postgresql://app@db:5433/events"},
        ),
        (
            f"postgres://app:{SECRET}@db/events?schema=app&prefix=x_&outbox=true&notify=off"
            "&max_connections=3&transient_retries=0&ssl=require",
            {"schema": "app", "prefix": "x_", "outbox": True, "notify": False,
             "max_connections": 3, "transient_retries": 0,
             "driver_url": f"postgres://app:{SECRET}@db/events?ssl=require"},
        ),
        ("postgresql+asyncpg://db/e?schema=a", {"schema": "a", "driver_url": "postgresql+asyncpg://db/e"}),
    ],
)  # fmt: skip
def test_database_urls(url: str, expected: dict[str, Any]) -> None:
    parsed = parse_database_url(url)
    assert {name: getattr(parsed, name) for name in expected} == expected
    assert SECRET not in repr(parsed)
    assert SECRET not in parsed.description


def test_keyword_options_win_over_the_query() -> None:
    parsed = parse_database_url("postgresql://db/e?schema=a&outbox=true", schema="b", outbox=False)
    assert (parsed.schema, parsed.outbox) == ("b", False)
    assert parse_database_url("sqlite:///a.db", busy_timeout=3).busy_timeout == 3.0


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("events.db", {}, "is not a store URL"),
        ("mysql://db/e", {}, "unsupported scheme 'mysql'"),
        ("redis://localhost", {}, "unsupported scheme 'redis'"),
        ("memory://somewhere", {}, "takes no path"),
        ("memory://?schema=a", {}, "no query options or keywords named 'schema'"),
        ("sqlite://", {}, "names a file after three slashes"),
        ("sqlite:relative.db", {}, "is not a store URL"),
        ("sqlite:///d.db?mode=ro", {}, "accepted ones are busy_timeout, outbox, prefix"),
        ("sqlite:///d.db?synchronous=sometimes", {}, "synchronous must be one of"),
        ("sqlite:///d.db", {"busy_timeout": "soon"}, "busy_timeout='soon': expected a number"),
        (f"postgresql://a:{SECRET}@db/e?schema=a&schema=b", {}, "give the schema once"),
        (f"postgresql://a:{SECRET}@db/e?schema=", {}, "schema must not be empty"),
        (f"postgresql://a:{SECRET}@db:port/e", {}, "not a valid PostgreSQL URL"),
        (f"postgresql://a:{SECRET}@db/e?max_connections=0", {}, "max_connections >= 1"),
        (f"postgresql://a:{SECRET}@db/e?notify=maybe", {}, "expected true or false"),
        (f"postgresql://a:{SECRET}@db/e", {"max_connections": True}, "expected an integer"),
        (f"postgresql://a:{SECRET}@db/e", {"pool": 3}, "keywords named 'pool'"),
    ],
)
def test_unusable_database_urls(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_database_url(url, **options)
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)
    assert isinstance(caught.value, EventSourceError | ValueError)


async def test_factories_build_the_backend_of_each_url(tmp_path: Path) -> None:
    memory = create_event_store("memory://?outbox=true", registry=contract_registry)
    assert type(memory).__name__ == "InMemoryEventStore"
    assert type(memory.outbox).__name__ == "InMemoryOutboxRepository"  # type: ignore[attr-defined]
    sqlite = f"sqlite:///{tmp_path}/app.db?prefix=x_"
    made = [
        (create_event_store(sqlite), "SQLiteEventStore"),
        (create_snapshot_store(sqlite), "SQLiteSnapshotStore"),
        (create_checkpoint_repository(sqlite), "SQLiteCheckpointRepository"),
        (create_dlq_repository(sqlite), "SQLiteDLQRepository"),
        (create_outbox_repository(sqlite), "SQLiteOutboxRepository"),
        (create_inbox_repository(sqlite), "SQLiteInboxRepository"),
        (create_inbox_repository("memory://"), "InMemoryInboxRepository"),
    ]
    postgresql = f"postgresql://app:{SECRET}@127.0.0.1:1/e?schema=s&prefix=p_"
    made += [
        (create_event_store(postgresql, outbox=True), "PostgreSQLEventStore"),
        (create_snapshot_store(postgresql), "PostgreSQLSnapshotStore"),
        (create_checkpoint_repository(postgresql), "PostgreSQLCheckpointRepository"),
        (create_dlq_repository(postgresql), "PostgreSQLDLQRepository"),
        (create_outbox_repository(postgresql), "PostgreSQLOutboxRepository"),
        (create_inbox_repository(postgresql), "PostgreSQLInboxRepository"),
    ]
    try:
        assert [type(part).__name__ for part, _ in made] == [name for _, name in made]
        tables = [str(getattr(part, "table", "")) for part, _ in made]
        assert tables[2:4] == ['"x_checkpoints"', '"x_dead_letters"']
        assert tables[8:] == [f'"s"."p_{name}"' for name in (
            "snapshots", "checkpoints", "dead_letters", "outbox", "inbox")]  # fmt: skip
        assert made[7][0].outbox is True  # type: ignore[attr-defined]
        assert len({id(part.engine) for part, _ in made[7:]}) == 6  # type: ignore[attr-defined]
    finally:
        for part, _ in made:
            await part.close()


# -- bus URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", {"consumer_group": "default", "auto_start": True}),
        ("memory://?group=g&max_attempts=2&auto_start=no", {"consumer_group": "g",
         "max_attempts": 2, "auto_start": False}),
        (f"redis://:{SECRET}@cache:6380/2?prefix=app&group=billing&consumer=c1&block=0.5",
         {"url": f"redis://:{SECRET}@cache:6380/2", "stream_prefix": "app",
          "consumer_group": "billing", "consumer_name": "c1", "block": 0.5}),
        ("rediss://cache?max_stream_length=100&dlq_max_length=none",
         {"url": "rediss://cache", "max_stream_length": 100, "dlq_max_length": None}),
        (f"amqp://app:{SECRET}@mq:5673/vh?exchange=ex&group=g&prefetch_count=5",
         {"url": f"amqp://app:{SECRET}@mq:5673/vh", "exchange": "ex", "consumer_group": "g",
          "prefetch_count": 5}),
        ("amqps://mq/?heartbeat=30", {"url": "amqps://mq/", "heartbeat": 30}),
        ("kafka://k1:9092,k2:9093?topic=t.events&group=g&partitions=3&acks=all"
         "&auto_offset_reset=earliest&create_topics=false",
         {"bootstrap_servers": "k1:9092,k2:9093", "topic": "t.events", "consumer_group": "g",
          "partitions": 3, "acks": "all", "auto_offset_reset": "earliest",
          "create_topics": False}),
        ("kafka://k1:9092?acks=1&enable_idempotence=false", {"acks": 1}),
        (f"nats://app:{SECRET}@n:4223?prefix=app.events&group=g&ack_wait=5&max_age=none",
         {"url": f"nats://app:{SECRET}@n:4223", "subject_prefix": "app.events",
          "consumer_group": "g", "ack_wait": 5.0, "max_age": None}),
    ],
)  # fmt: skip
def test_bus_urls(url: str, expected: dict[str, Any]) -> None:
    config = event_bus_config(url)
    assert {name: getattr(config, name) for name in expected} == expected


def test_bus_keyword_options_win_and_take_what_text_cannot_say() -> None:
    tenant = uuid4()
    config = event_bus_config(
        "kafka://k:9092?group=from-url&partitions=2",
        consumer_group="from-keyword",
        client_options={"security_protocol": "SSL"},
        tenant_id=str(tenant),
    )
    assert config.consumer_group == "from-keyword"
    assert config.partitions == 2  # type: ignore[attr-defined]
    assert config.client_options == {"security_protocol": "SSL"}  # type: ignore[attr-defined]
    assert config.tenant_id == tenant


def test_an_option_and_its_alias_cannot_both_be_keywords() -> None:
    with pytest.raises(ConfigurationError, match="consumer_group is given twice"):
        event_bus_config("memory://", group="a", consumer_group="b")


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("mqtt://n:1883", {}, "unsupported bus URL"),
        ("nats://n:4222/events", {}, "takes no path"),
        ("nats://n:4222?prefix=a b", {}, "is not a NATS subject"),
        ("redis:cache", {}, "unsupported bus URL"),
        ("memory://somewhere", {}, "takes no host or path"),
        (f"redis://:{SECRET}@cache/db1", {}, "database number"),
        (f"redis://:{SECRET}@cache:port/0", {}, "not a valid bus URL"),
        (f"redis://:{SECRET}@cache/0?block=20", {}, "block must be positive"),
        (f"redis://:{SECRET}@cache/0?group=a&group=b", {}, "give the group once"),
        (f"amqp://u:{SECRET}@mq/?exchange=", {}, "exchange must not be empty"),
        (f"amqp://u:{SECRET}@mq/?topic=t", {}, "keywords named 'topic'"),
        (f"amqp://u:{SECRET}@mq/", {"prefix": "p"}, "keywords named 'prefix'"),
        ("kafka://u:p@k:9092", {}, "lists servers only"),
        ("kafka://k:9092,", {}, "lists servers only"),
        ("kafka://k:9092?acks=2", {}, "expected one of 0, 1, 'all'"),
        ("kafka://k:9092?group=a b", {}, "may hold only letters"),
        ("kafka://k:9092?client_options=x", {}, "pass it as a keyword option"),
        ("memory://?max_attempts=0", {}, "max_attempts must be at least 1"),
    ],
)
def test_unusable_bus_urls(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        event_bus_config(url, **options)
    assert message in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_buses_are_built_without_connecting() -> None:
    """Nothing listens on port 1: building must not try to connect."""
    buses = [
        create_event_bus("memory://?group=g", registry=contract_registry),
        create_event_bus("redis://127.0.0.1:1/0?prefix=p&group=g"),
        create_event_bus("amqp://guest:guest@127.0.0.1:1/?exchange=e&group=g"),
        create_event_bus("kafka://127.0.0.1:1?topic=t&group=g"),
        create_event_bus("nats://127.0.0.1:1?prefix=p&group=g"),
    ]
    names = ["InMemoryEventBus", "RedisEventBus", "RabbitMQEventBus", "KafkaEventBus"]
    names.append("NATSEventBus")
    assert [type(bus).__name__ for bus in buses] == names
    assert {bus.config.consumer_group for bus in buses} == {"g"}
    assert buses[2].queue == "e.g"  # type: ignore[attr-defined]
    for bus in buses:
        await bus.close()


# -- settings ------------------------------------------------------------------------------------


def test_settings_from_env_and_repr_masks_passwords() -> None:
    env = {
        "APP_EVENT_STORE_URL": f"postgresql://app:{SECRET}@db/e?schema=app",
        "APP_BUS_URL": f"amqp://app:{SECRET}@mq/",
        "APP_CONSUMER_GROUP": "billing",
        "EVENTSOURCE_EVENT_STORE_URL": "memory://",
    }
    settings = EventSourceSettings.from_env("APP_", env)
    assert settings.event_store_url == env["APP_EVENT_STORE_URL"]
    assert (settings.bus_url, settings.consumer_group) == (env["APP_BUS_URL"], "billing")
    assert SECRET not in repr(settings)
    assert "app:***@db" in repr(settings)
    assert EventSourceSettings.from_env(environ=env).bus_url is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "APP_EVENT_STORE_URL is not set"),
        ({"APP_EVENT_STORE_URL": "mongodb://db"}, "unsupported scheme 'mongodb'"),
        ({"APP_EVENT_STORE_URL": "memory://", "APP_BUS_URL": "zmq://x"}, "unsupported bus URL"),
        (
            {"APP_EVENT_STORE_URL": "memory://", "APP_BUS_URL": "kafka://k:1",
             "APP_CONSUMER_GROUP": "not allowed"},
            "may hold only letters",
        ),
    ],
)  # fmt: skip
def test_settings_are_checked_when_made(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        EventSourceSettings.from_env("APP_", env)


def test_sqlite_memory_cannot_be_shared_by_components() -> None:
    settings = EventSourceSettings(event_store_url="sqlite:///:memory:")
    with pytest.raises(ConfigurationError, match="use a file"):
        settings.build()


async def _round_trip(components: EventSourceComponents) -> UUID:
    """Append and read back one event, and use every other part once."""
    await components.create_schema()
    cart = uuid4()
    event = ItemAdded(name="book", aggregate_id=cart)
    await components.event_store.append_events(cart, "Cart", [event], 0)
    read = [stored.event async for stored in components.event_store.read_stream(cart)]
    assert [(type(e), e.event_id) for e in read] == [(ItemAdded, event.event_id)]
    await components.snapshot_store.save(Snapshot(cart, "Cart", 1, 1, "{}"))
    assert (await components.snapshot_store.get(cart)) is not None
    await components.checkpoints.save("proj", Position(1, 1))
    saved = await components.checkpoints.get("proj")
    assert isinstance(saved, Checkpoint)
    assert saved.position == Position(1, 1)
    assert await components.inbox.record("billing", event.event_id) is True
    assert await components.inbox.record("billing", event.event_id) is False
    assert await components.dead_letters.list("proj") == []
    return event.event_id


async def test_memory_components_round_trip() -> None:
    settings = EventSourceSettings(event_store_url="memory://?outbox=true", bus_url="memory://")
    async with settings.build(registry=contract_registry) as components:
        await _round_trip(components)
        assert (await components.outbox.stats()).pending == 1  # the store filled this outbox
        assert isinstance(components.bus, InMemoryEventBus)
        assert isinstance(components.bus.config, InMemoryEventBusConfig)


@pytest.mark.sqlite
async def test_sqlite_components_share_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/app.db?prefix=app_&outbox=true"
    async with EventSourceSettings(event_store_url=url).build(
        registry=contract_registry
    ) as components:
        assert components.bus is None
        await _round_trip(components)
        assert (await components.outbox.stats()).pending == 1
    again = create_event_store(url, registry=contract_registry)
    async with again:
        assert await again.get_stream_version(uuid4()) == 0
        assert [s.event_type async for s in again.read_all()] == ["ItemAdded"]


@pytest.mark.postgresql
async def test_postgresql_components_share_one_engine(postgres_url: str, schema: str) -> None:
    url = f"{postgres_url}?schema={schema}&prefix=app_&outbox=true&max_connections=2"
    components = EventSourceSettings(event_store_url=url).build(registry=contract_registry)
    engine = components.engine
    assert engine is not None
    parts = [components.event_store, components.snapshot_store, components.checkpoints,
             components.dead_letters, components.outbox, components.inbox]  # fmt: skip
    assert all(part.engine is engine for part in parts)  # type: ignore[attr-defined]
    assert engine.pool.size() == 2 + 4 * 5  # type: ignore[attr-defined]
    try:
        await _round_trip(components)
        assert (await components.outbox.stats()).pending == 1
        # Many concurrent appends through the shared engine: every stream gets its event.
        carts = [uuid4() for _ in range(40)]
        await asyncio.gather(*(
            components.event_store.append_events(c, "Cart", [ItemAdded(name="x")], 0)
            for c in carts))  # fmt: skip
        versions = await asyncio.gather(
            *(components.event_store.get_stream_version(c) for c in carts)
        )
        assert versions == [1] * 40
    finally:
        await components.close()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="closed"):
        await components.event_store.get_stream_version(uuid4())


@pytest.mark.redis
async def test_redis_bus_from_a_url_publishes_and_consumes(
    redis_url: str, redis_prefix: str
) -> None:
    bus = create_event_bus(
        f"{redis_url}?prefix={redis_prefix}&group=config-test&block=0.5",
        registry=contract_registry,
        claim_interval=0.2,
    )
    recorder = Recorder()
    bus.subscribe(ItemAdded, recorder)
    try:
        await bus.start_consuming()
        event = ItemAdded(name="from a URL")
        await bus.publish([event])
        await eventually(lambda: recorder.ids == [event.event_id], 20, "the event")
        assert bus.stats.handled == 1
    finally:
        await asyncio.wait_for(bus.shutdown(timeout=5), 20)


def test_database_url_is_a_value() -> None:
    assert parse_database_url("memory://") == DatabaseURL("memory", "memory://")
