"""Hostile names and poison rows, end to end on PostgreSQL: a schema and prefix that are
legal but hostile (quotes, a semicolon, SQL, non-ASCII) carry a
whole pipeline; poison rows in the feed (an unknown type, a payload of the wrong shape, a
handler failing with NUL and lone surrogates in its message) are parked with their raw rows
while every other event is projected once; names PostgreSQL would cut are refused up front.
"""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from eventsource import (
    ConfigurationError,
    DomainEvent,
    EventRegistry,
    PostgreSQLEventStore,
    SerializationError,
    StoredEvent,
)
from eventsource.repositories import PostgreSQLCheckpointRepository, PostgreSQLDLQRepository
from eventsource.subscriptions import SubscriptionConfig, SubscriptionManager, SubscriptionState

pytestmark = [pytest.mark.faults, pytest.mark.postgresql]

HOSTILE_SCHEMA = 'tenant"; DROP SCHEMA public; --ß'
HOSTILE_PREFIX = "é'x_"
CONFIG = SubscriptionConfig(batch_size=7, poll_interval=0.05, retry_base=0.001, retry_cap=0.01)

reader_registry = EventRegistry()
writer_registry = EventRegistry()  # a newer service: it also knows `Refunded`


class Paid(DomainEvent, registry=reader_registry):
    amount: int


class Refunded(DomainEvent, registry=writer_registry):
    amount: int


writer_registry.register(Paid)


@pytest.fixture
async def hostile_schema(postgres_url: str) -> object:
    import asyncpg

    yield HOSTILE_SCHEMA
    conn = await asyncpg.connect(postgres_url)
    try:
        quoted = HOSTILE_SCHEMA.replace('"', '""')
        await conn.execute(f'DROP SCHEMA IF EXISTS "{quoted}" CASCADE')
    finally:
        await conn.close()


async def test_poison_rows_under_a_hostile_schema_are_parked_and_the_rest_projected_once(
    postgres_url: str, hostile_schema: str
) -> None:
    import asyncpg

    where = {"schema": hostile_schema, "prefix": HOSTILE_PREFIX}
    writer = PostgreSQLEventStore.from_url(postgres_url, registry=writer_registry, **where)
    store = PostgreSQLEventStore.from_url(postgres_url, registry=reader_registry, **where)
    checkpoints = PostgreSQLCheckpointRepository.from_url(postgres_url, **where)
    dead_letters = PostgreSQLDLQRepository.from_url(postgres_url, **where)
    await writer.create_schema()
    accounts = [uuid4() for _ in range(5)]
    refused_amount = 999  # the handler fails on it with NUL and a lone surrogate in its error
    seen: list[tuple[UUID, int]] = []

    async def project(stored: StoredEvent) -> None:
        event = stored.event  # decodes: unknown types and corrupt payloads fail here
        assert isinstance(event, Paid)
        if event.amount == refused_amount:
            raise ValueError("refused \x00 amount \ud800 in the handler")
        seen.append((stored.aggregate_id, event.amount))

    try:
        good: list[tuple[UUID, int]] = []
        corrupted: UUID | None = None
        for round_ in range(4):
            for account in accounts:
                version = await writer.get_stream_version(account)
                amount = round_ * 10 + accounts.index(account)
                events: list[DomainEvent] = [Paid(amount=amount)]
                if account == accounts[1] and round_ == 2:
                    events.append(Refunded(amount=1))  # unknown to the reader
                if account == accounts[2] and round_ == 1:
                    events = [Paid(amount=refused_amount)]
                result = await writer.append_events(account, "Account", events, version)
                if account == accounts[3] and round_ == 0:
                    corrupted = result.events[0].event_id
                    continue
                good.extend((account, e.amount) for e in events if isinstance(e, Paid))
        good.remove((accounts[2], refused_amount))
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(
                f"UPDATE {store.table} SET payload = '[\"wrong shape\"]'::jsonb"
                " WHERE event_id = $1",
                corrupted,
            )
        finally:
            await conn.close()

        async with SubscriptionManager(store, checkpoints, dead_letters, config=CONFIG) as manager:
            subscription = manager.subscribe(project, name="ledger ' \" ; --")
            end = await store.current_position()
            await subscription.wait_for(end, timeout=20)
            async with asyncio.timeout(10):  # the next, empty read makes it live
                while subscription.state is not SubscriptionState.LIVE:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            letters = await dead_letters.list(subscription.name)
    finally:
        for closing in (checkpoints, dead_letters, store, writer):
            await closing.close()

    assert sorted(seen) == sorted(good)  # every other event once, poison rows skipped
    assert len(seen) == len(set(seen))
    by_type = {letter.event_type: letter for letter in letters}
    assert set(by_type) == {"Refunded", "Paid"}
    assert len(letters) == 3
    assert by_type["Refunded"].undecodable
    assert '"amount":1' in by_type["Refunded"].payload.replace(" ", "")
    corrupt = next(letter for letter in letters if letter.event_id == corrupted)
    assert corrupt.undecodable
    assert "wrong shape" in corrupt.payload
    refused = next(
        letter for letter in letters if not letter.undecodable and letter.event_type == "Paid"
    )
    assert "\x00" not in refused.error
    assert "refused" in refused.error
    assert "amount" in refused.error


async def test_names_postgresql_would_cut_are_refused_before_any_sql(postgres_url: str) -> None:
    long_a = "tenant_" + "ä" * 30 + "_a"  # 69 bytes: PostgreSQL would keep the first 63
    long_b = "tenant_" + "ä" * 30 + "_b"
    for schema in (long_a, long_b):
        with pytest.raises(ConfigurationError, match="63"):
            PostgreSQLEventStore.from_url(postgres_url, schema=schema)
    with pytest.raises(ConfigurationError, match="prefix"):
        PostgreSQLEventStore.from_url(postgres_url, schema="public", prefix="p" * 50)


async def test_values_no_backend_can_read_back_are_refused_before_storing(
    postgres_url: str, schema: str
) -> None:
    account = uuid4()
    async with PostgreSQLEventStore.from_url(
        postgres_url, schema=schema, registry=reader_registry
    ) as store:
        await store.create_schema()
        for hostile in (float("nan"), float("inf")):
            with pytest.raises(SerializationError):
                await store.append_events(
                    account, "Account", [Paid(amount=1).with_metadata(x=hostile)], 0
                )
        with pytest.raises(SerializationError):
            await store.append_events(
                account, "Account", [Paid(amount=1).with_metadata(note="a\x00b")], 0
            )
        assert await store.get_stream_version(account) == 0
