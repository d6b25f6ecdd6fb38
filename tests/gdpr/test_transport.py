"""Personal data in transit and under contention: bus messages carry ciphertext, and
concurrent writers on PostgreSQL agree on one key per subject."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from eventsource import ExpectedVersion, InMemoryEventStore
from eventsource.gdpr import (
    EncryptedEventStore,
    InMemoryKeyStore,
    OpenedHandler,
    PersonalDataVault,
    is_erased,
)
from tests.gdpr._events import PLAIN_EMAIL, CustomerRegistered, registry

ROOT = Path(__file__).resolve().parents[2]


def _registered(subject: str) -> CustomerRegistered:
    return CustomerRegistered(customer_id=subject, email=PLAIN_EMAIL, name="Zoë Secretname")


class Received:
    def __init__(self) -> None:
        self.emails: list[str] = []

    def subscribed_to(self) -> list[type[CustomerRegistered]]:
        return [CustomerRegistered]

    def handle(self, event: CustomerRegistered) -> None:  # a sync handler is fine too
        self.emails.append(event.email)


@pytest.mark.redis
async def test_a_bus_message_carries_ciphertext_and_handlers_get_plain_values(
    redis_url: str, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    from eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
    from eventsource.testing.bus import eventually

    vault = PersonalDataVault(InMemoryKeyStore())
    store = EncryptedEventStore(InMemoryEventStore(registry=registry), vault, registry=registry)
    config = RedisEventBusConfig(url=redis_url, stream_prefix=redis_prefix, block=0.2)
    received = Received()
    async with RedisEventBus(config, registry=registry) as bus:
        bus.subscribe_all(OpenedHandler(received, vault))
        await bus.start_consuming()
        subject = f"bus-{uuid4()}"
        result = await store.append_events(
            uuid4(), "Customer", [_registered(subject)], ExpectedVersion.NO_STREAM
        )
        await bus.publish(result.events)  # what a repository's event_publisher is given
        await eventually(lambda: bool(received.emails), 10, "the handler")
        assert received.emails == [PLAIN_EMAIL]
        await bus.stop_consuming()

    raw = aioredis.Redis.from_url(redis_url)
    try:
        entries = await raw.xrange(f"{redis_prefix}:events")
    finally:
        await raw.aclose()
    wire = b"".join(k + v for _, fields in entries for k, v in fields.items())
    assert b"gdpr:v1:" in wire
    assert PLAIN_EMAIL.encode() not in wire
    assert b"Secretname" not in wire

    await store.forget(subject)
    [late] = await vault.open(list(result.events))  # a message consumed after forgetting
    assert is_erased(late.email)


def test_a_plain_event_never_becomes_a_message() -> None:
    """Whatever forgets to seal (a handler re-publishing an opened event) fails loudly."""
    from eventsource.bus import _wire
    from eventsource.exceptions import SerializationError

    with pytest.raises(SerializationError, match="plain value"):
        _wire.encode(_registered("x"))


@pytest.mark.postgresql
async def test_concurrent_writers_of_a_new_subject_use_one_key(
    postgres_url: str, schema: str
) -> None:
    """Eight writers, each with its own key store connection and cache, append the first
    events of one subject at once: one key row, and every event opens with it."""
    from eventsource import PostgreSQLEventStore
    from eventsource.gdpr import PostgreSQLKeyStore

    inner = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await inner.create_schema()
    key_stores = [PostgreSQLKeyStore.from_url(postgres_url, schema=schema) for _ in range(8)]
    subject = f"race-{uuid4()}"
    try:
        writers = [
            EncryptedEventStore(inner, PersonalDataVault(keys), registry=registry)
            for keys in key_stores
        ]
        streams = [uuid4() for _ in writers]
        await asyncio.gather(
            *(
                writer.append_events(stream, "Customer", [_registered(subject)], 0)
                for writer, stream in zip(writers, streams, strict=True)
            )
        )
        assert len(await key_stores[0].get_keys([subject])) == 1
        fresh = EncryptedEventStore(inner, PersonalDataVault(key_stores[0]), registry=registry)
        emails = [stored.event.email async for stored in fresh.read_all()]
        assert emails == [PLAIN_EMAIL] * 8
        import asyncpg

        conn = await asyncpg.connect(postgres_url)
        try:
            rows = await conn.fetchval(
                f'SELECT count(*) FROM "{schema}".gdpr_keys WHERE subject = $1', subject
            )
        finally:
            await conn.close()
        assert rows == 1
    finally:
        for keys in key_stores:
            await keys.close()
        await inner.close()


@pytest.mark.postgresql
async def test_writer_processes_creating_the_first_key_at_once_share_it(
    postgres_url: str, schema: str, tmp_path: Path
) -> None:
    """Two processes, each with its own connections and key cache, append the first events
    of one subject released at the same moment: both used one key. (Process start-up is
    slow on a loaded machine, hence two; the test above races eight connections.)"""
    from eventsource import PostgreSQLEventStore
    from eventsource.gdpr import PostgreSQLKeyStore

    inner = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await inner.create_schema()
    subject, go = f"proc-{uuid4()}", tmp_path / "go"
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.gdpr._writer",
            postgres_url,
            schema,
            subject,
            str(go),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    keys = PostgreSQLKeyStore.from_url(postgres_url, schema=schema)
    try:
        for writer in writers:
            assert writer.stdout is not None
            async with asyncio.timeout(180):
                assert (await writer.stdout.readline()).strip() == b"ready"
        go.touch()
        used = []
        for writer in writers:
            async with asyncio.timeout(180):
                out, _ = await writer.communicate()
            assert writer.returncode == 0
            used.append(out.strip().decode())
        [key] = (await keys.get_keys([subject])).values()
        assert used == [key.hex()] * 2
        store = EncryptedEventStore(inner, PersonalDataVault(keys), registry=registry)
        emails = [stored.event.email async for stored in store.read_all()]
        assert emails == ["w@example.org"] * 10
    finally:
        for writer in writers:
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
        await keys.close()
        await inner.close()


@pytest.mark.postgresql
async def test_re_appending_the_same_events_stays_idempotent(
    postgres_url: str, schema: str
) -> None:
    """A retried append (a lost COMMIT reply, say) seals the same values to the same tokens,
    so the store recognises it as the earlier append instead of a conflicting one."""
    from eventsource import PostgreSQLEventStore

    inner = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await inner.create_schema()
    try:
        store = EncryptedEventStore(inner, PersonalDataVault(InMemoryKeyStore()), registry=registry)
        stream, events = uuid4(), [_registered("retry"), _registered("retry")]
        first = await store.append_events(stream, "Customer", events, ExpectedVersion.NO_STREAM)
        again = await store.append_events(stream, "Customer", events, ExpectedVersion.NO_STREAM)
        assert not first.already_stored
        assert again.already_stored
        assert again.new_version == 2
    finally:
        await inner.close()


@pytest.mark.sqlite
async def test_an_undecodable_row_raises_where_it_stands(tmp_path: Path) -> None:
    """The wrapper opens what decodes; a corrupt row keeps its own typed error, at its place."""
    import sqlite3

    from eventsource import SQLiteEventStore
    from eventsource.exceptions import SerializationError

    path = tmp_path / "events.db"
    async with SQLiteEventStore(path, registry=registry) as inner:
        store = EncryptedEventStore(inner, PersonalDataVault(InMemoryKeyStore()), registry=registry)
        stream = uuid4()
        await store.append_events(stream, "Customer", [_registered("u"), _registered("u")], 0)
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE events SET payload = '{not json' WHERE aggregate_version = 1")
        read = [stored async for stored in store.read_stream(stream)]
        with pytest.raises(SerializationError):
            _ = read[0].event
        assert read[1].event.email == PLAIN_EMAIL
