"""The PostgreSQL global feed under concurrent units of work: per-stream order, gap-freedom,
and a horizon that only writers of the events table hold back.

Every test works in its own schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventsource import (
    AggregateRepository,
    DeclarativeAggregate,
    ExpectedVersion,
    FeedOrderConflictError,
    OptimisticLockError,
    Position,
    ReadOptions,
    TransientStoreError,
    handles,
)
from eventsource.stores._postgresql_feed import WRITER_CLASS, xid8_near
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.testing.events import ItemAdded

pytestmark = pytest.mark.postgresql


def _items(count: int, tag: str) -> list[ItemAdded]:
    return [ItemAdded(name=f"{tag}-{n}", quantity=n) for n in range(1, count + 1)]


async def _pid(conn: AsyncConnection) -> int:
    return int(await conn.scalar(text("SELECT pg_backend_pid()")))


# -- the horizon -----------------------------------------------------------------------------


async def test_xid8_near_restores_the_epoch_of_a_32_bit_xid(postgres_url: str) -> None:
    epoch = 2**32
    cases = [
        (5, epoch + 10, epoch + 5),  # this epoch, before the snapshot's end
        (2**32 - 5, epoch + 10, 2**32 - 5),  # the previous epoch
        (20, epoch + 10, epoch + 20),  # assigned after the snapshot was taken
        (2**31 + 7, 3 * epoch + 2**31 + 9, 3 * epoch + 2**31 + 7),
        (100, 100, 100),
        (3, 1000, 3),
    ]
    conn = await asyncpg.connect(postgres_url)
    try:
        sql = f"SELECT ({xid8_near('$1::text::xid', '$2::text::xid8')})::text"
        for xid, near, expected in cases:
            assert int(await conn.fetchval(sql, str(xid), str(near))) == expected, (xid, near)
    finally:
        await conn.close()


async def test_append_takes_the_writer_lock_before_its_transaction_id(
    store: PostgreSQLEventStore, postgres_url: str, schema: str
) -> None:
    """An append waiting for the writer lock has no transaction id yet: a reader never sees a
    writer with an id that does not hold the lock."""
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(
            "SELECT pg_advisory_lock($1::int, $2::int)", WRITER_CLASS, store._feed_key
        )
        appending = asyncio.create_task(store.append_events(uuid4(), "Cart", _items(2, "w"), 0))
        while True:
            row = await admin.fetchrow(
                "SELECT pid, backend_xid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'WITH writer AS%' AND query LIKE $1",
                f"%{schema}%",
            )
            if row is not None:
                break
            await asyncio.sleep(0.01)
        assert row["backend_xid"] is None
        assert not appending.done()
        await admin.execute(
            "SELECT pg_advisory_unlock($1::int, $2::int)", WRITER_CLASS, store._feed_key
        )
        result = await appending
        assert result.new_version == 2
    finally:
        await admin.close()


async def test_unrelated_transactions_do_not_hold_the_feed(
    store: PostgreSQLEventStore, postgres_url: str, schema: str
) -> None:
    """A transaction holding an id (plain SQL, or a store on another table that commits late)
    does not stall this store's readers."""
    stranger = await asyncpg.connect(postgres_url)
    other = PostgreSQLEventStore.from_url(postgres_url, schema=schema, prefix="other_")
    await other.create_schema()
    try:
        tx = stranger.transaction()
        await tx.start()
        await stranger.fetchval("SELECT pg_current_xact_id()")
        async with other.engine.connect() as conn, conn.begin():
            await other.using(conn).append_events(uuid4(), "Cart", _items(1, "o"), 0)
            result = await store.append_events(uuid4(), "Cart", _items(3, "ours"), 0)
            read = [s.event_id async for s in store.read_all()]
            assert read == [e.event_id for e in result.events]
            assert await store.current_position() == result.last_position
            lag = await store.horizon_lag()
            assert (lag.pending_events, lag.blocking_pid) == (0, None)
            assert lag.readable == result.last_position
            assert not lag.stuck(0)
        await tx.rollback()
    finally:
        await stranger.close()
        await other.close()


async def test_open_writer_holds_the_feed_and_horizon_lag_names_it(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    before = await store.append_events(uuid4(), "Cart", _items(1, "before"), 0)
    async with engine.connect() as conn:
        tx = await conn.begin()
        pid = await _pid(conn)
        held = await store.using(conn).append_events(uuid4(), "Cart", _items(2, "held"), 0)
        after = await store.append_events(uuid4(), "Cart", _items(3, "after"), 0)
        assert [s async for s in store.read_all(ReadOptions(after=before.last_position))] == []
        assert await store.current_position() == before.last_position
        lag = await store.horizon_lag()
        assert lag.blocking_pid == pid
        assert lag.pending_events == 3
        assert lag.readable == before.last_position
        assert lag.oldest_transaction_age is not None
        assert lag.stuck(timedelta(0))
        assert lag.stuck(0.0)
        assert not lag.stuck(timedelta(hours=1))
        await tx.commit()
    read = [s.event_id async for s in store.read_all(ReadOptions(after=before.last_position))]
    assert read == [e.event_id for e in (*held.events, *after.events)]
    lag = await store.horizon_lag()
    assert (lag.pending_events, lag.blocking_pid, lag.oldest_transaction_age) == (0, None, None)


# -- per-stream order ------------------------------------------------------------------------


async def test_append_behind_a_younger_transactions_version_is_refused(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    """P takes its id (appending to A); R appends S v1 and commits (a younger id); P's S v2
    would come before S v1 in the feed: refused, and the retried unit of work lands in order."""
    stream = uuid4()
    async with engine.connect() as conn:
        tx = await conn.begin()
        bound = store.using(conn)
        await bound.append_events(uuid4(), "Cart", _items(1, "a"), 0)
        first = await store.append_events(stream, "Cart", _items(1, "v1"), 0)
        with pytest.raises(FeedOrderConflictError) as caught:
            await bound.append_events(stream, "Cart", _items(1, "v2"), ExpectedVersion.ANY)
        assert caught.value.aggregate_id == stream
        assert "retry the whole transaction" in str(caught.value)
        await tx.rollback()
    async with engine.begin() as conn:
        second = await store.using(conn).append_events(stream, "Cart", _items(1, "v2"), 1)
    feed = [s.event_id async for s in store.read_all()]
    assert feed == [first.events[0].event_id, second.events[0].event_id]


async def test_late_writer_is_refused_once_a_younger_transaction_committed(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    """A transaction that got its id before appending is late: a reader may have passed its
    id. Alone it may append (and holds the feed); after a younger commit it is refused."""
    async with engine.connect() as conn:
        tx = await conn.begin()
        await conn.execute(text("SELECT pg_current_xact_id()"))
        alone = await store.using(conn).append_events(uuid4(), "Cart", _items(1, "alone"), 0)
        await tx.commit()
    assert [s.event_id async for s in store.read_all()] == [alone.events[0].event_id]

    async with engine.connect() as conn:
        tx = await conn.begin()
        await conn.execute(text("SELECT pg_current_xact_id()"))
        younger = await store.append_events(uuid4(), "Cart", _items(1, "younger"), 0)
        with pytest.raises(FeedOrderConflictError, match="younger transaction"):
            await store.using(conn).append_events(uuid4(), "Cart", _items(1, "late"), 0)
        await tx.rollback()
    feed = [s.event_id async for s in store.read_all(ReadOptions(after=alone.last_position))]
    assert feed == [younger.events[0].event_id]


async def test_taking_the_writer_lock_first_makes_later_appends_punctual(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    """A unit of work that writes another row before appending is late, and refused once a
    younger transaction committed events; with `take_writer_lock()` first it never is, and
    it holds the feed (a reader waits for it instead of passing it)."""
    async with engine.connect() as conn:
        tx = await conn.begin()
        bound = store.using(conn)
        await bound.take_writer_lock()
        await conn.execute(text("SELECT pg_current_xact_id()"))  # the unit of work's own row
        younger = await store.append_events(uuid4(), "Cart", _items(1, "younger"), 0)
        assert [s.event_id async for s in store.read_all()] == []  # held behind this writer
        punctual = await bound.append_events(uuid4(), "Cart", _items(1, "punctual"), 0)
        await tx.commit()
    feed = [s.event_id async for s in store.read_all()]
    assert feed == [punctual.events[0].event_id, younger.events[0].event_id]

    async with engine.connect() as conn:  # called too late, it refuses at once
        tx = await conn.begin()
        await conn.execute(text("SELECT pg_current_xact_id()"))
        await store.append_events(uuid4(), "Cart", _items(1, "another"), 0)
        with pytest.raises(FeedOrderConflictError, match="writer lock") as caught:
            await store.using(conn).take_writer_lock()
        assert caught.value.aggregate_id is None
        await tx.rollback()
    with pytest.raises(ValueError, match="using"):
        await store.take_writer_lock()


class _Items(BaseModel):
    count: int = 0


class _Cart(DeclarativeAggregate[_Items]):
    aggregate_type = "Cart"

    def add(self) -> None:
        self.apply_event(ItemAdded(name="x"))

    @handles(ItemAdded)
    def _added(self, event: ItemAdded) -> None:
        self.state.count += 1


async def test_execute_in_a_late_transaction_leaves_the_retry_to_its_owner(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    """`execute` on a bound store does not retry a FeedOrderConflictError (a retry inside the
    same transaction cannot succeed); the whole unit of work, run again, gets through."""
    cart = uuid4()
    runs = 0

    def add(aggregate: _Cart) -> None:
        nonlocal runs
        runs += 1
        aggregate.add()

    async with engine.connect() as conn:
        tx = await conn.begin()
        await conn.execute(text("SELECT pg_current_xact_id()"))  # another write first
        await store.append_events(uuid4(), "Cart", _items(1, "younger"), 0)
        carts = AggregateRepository(store.using(conn), _Cart)
        with pytest.raises(FeedOrderConflictError):
            await carts.execute(cart, add, create=True)
        await tx.rollback()
    assert runs == 1
    async with engine.begin() as conn:
        await AggregateRepository(store.using(conn), _Cart).execute(cart, add, create=True)
    assert await store.get_stream_version(cart) == 1


# -- the property: random units of work -------------------------------------------------------


async def _unit_of_work(
    engine: AsyncEngine,
    store: PostgreSQLEventStore,
    rng: random.Random,
    streams: list[UUID],
    committed: list[UUID],
    tag: str,
    outcomes: Counter[str],
) -> int:
    """One unit of work, retried as a whole after a conflict; returns how often it retried.
    `outcomes` counts late transactions that committed and the conflicts by type."""
    for attempt in range(500):
        async with engine.connect() as conn:
            tx = await conn.begin()
            bound = store.using(conn)
            written: list[UUID] = []
            late = rng.random() < 0.4
            try:
                if late:  # another write first: the transaction is late
                    await conn.execute(text("SELECT pg_current_xact_id()"))
                for part in range(rng.randint(1, 3)):
                    stream = rng.choice(streams) if rng.random() < 0.8 else uuid4()
                    batch = _items(rng.randint(1, 3), f"{tag}a{attempt}p{part}")
                    if rng.random() < 0.5:
                        expected: int = ExpectedVersion.ANY
                    else:
                        expected = await bound.get_stream_version(stream)
                    await bound.append_events(stream, "Cart", batch, expected)
                    written += [e.event_id for e in batch]
                    await asyncio.sleep(rng.uniform(0, 0.004))
                if rng.random() < 0.3:  # commit late
                    await conn.execute(text("SELECT pg_sleep(:s)"), {"s": rng.uniform(0, 0.03)})
                if rng.random() < 0.15:
                    await tx.rollback()
                    return attempt
                await tx.commit()
                committed.extend(written)
                outcomes["late committed"] += late
                return attempt
            except (OptimisticLockError, TransientStoreError) as exc:
                outcomes[type(exc).__name__] += 1
                await tx.rollback()
                await asyncio.sleep(rng.uniform(0, 0.005))
    raise AssertionError(f"unit of work {tag} did not get through")


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_units_of_work_keep_the_feed_gap_free_and_in_stream_order(
    store: PostgreSQLEventStore, engine: AsyncEngine, seed: int
) -> None:
    """Writers run multi-statement units of work on a few shared streams (ANY and exact
    expectations, late transactions, rollbacks, late commits) while a reader follows the feed
    from its checkpoint. The reader must see every committed event exactly once, and every
    stream's versions in order, both while following and in a final full read."""
    rng = random.Random(seed)
    streams = [uuid4() for _ in range(3)]
    committed: list[UUID] = []
    done = asyncio.Event()
    followed: list[tuple[UUID, UUID, int]] = []
    outcomes: Counter[str] = Counter()

    async def writer(n: int) -> int:
        own = random.Random(rng.random())
        retries = 0
        for u in range(6):
            retries += await _unit_of_work(
                engine, store, own, streams, committed, f"w{n}u{u}", outcomes
            )
        return retries

    async def reader() -> None:
        after: Position | None = None
        while True:
            finished = done.is_set()
            async for stored in store.read_all(ReadOptions(after=after, batch_size=5)):
                event = stored.event
                followed.append((event.event_id, event.aggregate_id, event.aggregate_version))
                after = stored.position
            if finished:
                return
            await asyncio.sleep(0.002)

    reading = asyncio.create_task(reader())
    retries = await asyncio.gather(*(writer(n) for n in range(8)))
    done.set()
    await reading
    final = [
        (s.event.event_id, s.event.aggregate_id, s.event.aggregate_version)
        async for s in store.read_all()
    ]
    for name, feed in (("following reader", followed), ("final read", final)):
        ids = [f[0] for f in feed]
        assert len(ids) == len(set(ids)), f"{name}: an event was delivered twice"
        assert set(ids) == set(committed), f"{name}: missed {len(set(committed) - set(ids))}"
        versions: dict[UUID, list[int]] = {}
        for _, stream, version in feed:
            versions.setdefault(stream, []).append(version)
        for stream, seen in versions.items():
            assert seen == list(range(1, len(seen) + 1)), f"{name}: stream {stream}: {seen}"
    assert len(committed) > 100
    assert sum(retries) > 0, outcomes  # conflicts did happen and were retried
    # both sides of the late-writer rule ran: refusals and late transactions that committed
    assert outcomes["FeedOrderConflictError"] > 0, outcomes
    assert outcomes["late committed"] > 0, outcomes


async def test_repeatable_read_reader_never_passes_a_transaction_its_snapshot_missed(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    """W is open when a REPEATABLE READ reader takes its snapshot, V (younger) has committed.
    W then commits: the reader's snapshot cannot see W's event, so it must not return V's
    (which sorts after W's) either; a later reader gets both, in order."""
    async with engine.connect() as writer_conn, engine.connect() as reader_conn:
        writer_tx = await writer_conn.begin()
        w = await store.using(writer_conn).append_events(uuid4(), "Cart", _items(1, "w"), 0)
        v = await store.append_events(uuid4(), "Cart", _items(1, "v"), 0)
        reader_conn = await reader_conn.execution_options(isolation_level="REPEATABLE READ")
        async with reader_conn.begin():
            await reader_conn.execute(text("SELECT 1"))  # the transaction's snapshot
            await writer_tx.commit()
            bound = store.using(reader_conn)
            assert [s async for s in bound.read_all()] == []
            assert await bound.current_position() == Position.START
    feed = [s.event_id async for s in store.read_all()]
    assert feed == [w.events[0].event_id, v.events[0].event_id]
