"""The lock contract on every backend, and what only PostgreSQL does: exclusion between
engines, transaction-scoped locks, and a lock lost with its session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from uuid import uuid4

import pytest

from eventsource.exceptions import EventSourceError
from eventsource.locks import (
    DistributedLock,
    InMemoryDistributedLock,
    LockLostError,
    LockTimeoutError,
)
from eventsource.testing.locks import DistributedLockContract

if TYPE_CHECKING:
    from eventsource.locks.postgresql import PostgreSQLDistributedLock


class TestInMemoryDistributedLock(DistributedLockContract):
    async def create_lock(self) -> DistributedLock:
        return InMemoryDistributedLock()


async def test_in_memory_waiters_are_served_in_arrival_order() -> None:
    locks = InMemoryDistributedLock()
    order: list[int] = []
    holder = await locks.acquire("fifo")

    async def wait(i: int) -> None:
        async with locks.acquire("fifo", timeout=30):
            order.append(i)
            await asyncio.sleep(0)

    waiters = []
    for i in range(10):
        waiters.append(asyncio.create_task(wait(i)))
        await asyncio.sleep(0)  # task i is queued before task i + 1 starts
    await holder.release()
    await asyncio.gather(*waiters)
    assert order == list(range(10))


def test_lock_errors_belong_to_the_library_hierarchy() -> None:
    error = LockTimeoutError("orders", 1.5)
    assert isinstance(error, EventSourceError)
    assert isinstance(error, TimeoutError)
    assert "orders" in str(error)
    assert "1.5s" in str(error)
    assert isinstance(LockLostError("orders"), EventSourceError)


@pytest.mark.postgresql
class TestPostgreSQLDistributedLock(DistributedLockContract):
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str) -> None:
        self.url = postgres_url
        self.namespace = f"test-{uuid4().hex}"

    async def create_lock(self) -> DistributedLock:
        from eventsource.locks.postgresql import PostgreSQLDistributedLock

        return PostgreSQLDistributedLock.from_url(self.url, namespace=self.namespace)


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[PostgreSQLDistributedLock, ...]]:
    """Two lock instances on two engines of their own, in one namespace: two processes."""
    from eventsource.locks.postgresql import PostgreSQLDistributedLock

    namespace = f"test-{uuid4().hex}"
    first = PostgreSQLDistributedLock.from_url(postgres_url, namespace=namespace)
    second = PostgreSQLDistributedLock.from_url(postgres_url, namespace=namespace)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def _holder_pid(locks: PostgreSQLDistributedLock, name: str) -> int:
    unsigned = locks.key(name) & 0xFFFF_FFFF_FFFF_FFFF
    async with locks.engine.connect() as conn:
        result = await conn.exec_driver_sql(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1",
            (unsigned >> 32, unsigned & 0xFFFF_FFFF),
        )
        return int(result.scalar_one())


def _checked_out(locks: PostgreSQLDistributedLock) -> int:
    """Connections of the lock's engine not back in its pool."""
    from sqlalchemy.pool import QueuePool

    pool = locks.engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


async def _terminate(locks: PostgreSQLDistributedLock, pid: int) -> None:
    async with locks.engine.connect() as conn:
        result = await conn.exec_driver_sql("SELECT pg_terminate_backend($1)", (pid,))
        assert result.scalar_one() is True


@pytest.mark.postgresql
async def test_two_engines_exclude_each_other(
    pair: tuple[PostgreSQLDistributedLock, PostgreSQLDistributedLock],
) -> None:
    first, second = pair
    counter = 0

    async def increment(locks: PostgreSQLDistributedLock) -> None:
        nonlocal counter
        async with locks.acquire("shared", timeout=30):
            seen = counter
            await asyncio.sleep(0.002)
            counter = seen + 1

    await asyncio.gather(*(increment(pair[i % 2]) for i in range(30)))
    assert counter == 30
    held = await first.acquire("shared", timeout=5)
    assert await second.try_acquire("shared") is None
    assert await second.is_locked("shared")
    with pytest.raises(LockTimeoutError):
        await second.acquire("shared", timeout=0.3)
    await held.release()
    taken = await second.try_acquire("shared")
    assert taken is not None
    await taken.release()


@pytest.mark.postgresql
async def test_namespaces_keep_locks_apart(postgres_url: str) -> None:
    from eventsource.locks.postgresql import PostgreSQLDistributedLock, lock_key
    from eventsource.subscriptions.postgresql import lease_key

    a = PostgreSQLDistributedLock.from_url(postgres_url, namespace=f"a-{uuid4().hex}")
    b = PostgreSQLDistributedLock.from_url(postgres_url, namespace=f"b-{uuid4().hex}")
    async with a, b, a.acquire("orders", timeout=5):
        other = await b.try_acquire("orders")
        assert other is not None
        await other.release()
    # Keys are stable across versions and processes, and never those of subscription leases.
    assert lock_key("orders", "app") == 1045856697056056069
    assert lock_key("orders", "app") != lease_key("orders", "app")


@pytest.mark.postgresql
async def test_timeouts_and_cancellations_return_every_connection(
    pair: tuple[PostgreSQLDistributedLock, PostgreSQLDistributedLock],
) -> None:
    first, second = pair
    holder = await first.acquire("busy")
    timed_out = await asyncio.gather(
        *(second.acquire("busy", timeout=0.2) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, LockTimeoutError) for o in timed_out), timed_out

    async def wait() -> None:
        await second.acquire("busy", timeout=30)

    waiters = [asyncio.create_task(wait()) for _ in range(5)]
    await asyncio.sleep(0.3)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await holder.release()
    assert [_checked_out(first), _checked_out(second)] == [0, 0]
    assert not await second.is_locked("busy")


async def _counter_table(locks: PostgreSQLDistributedLock, schema: str) -> str:
    table = f'"{schema}".counter'
    async with locks.engine.begin() as conn:
        await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        await conn.exec_driver_sql(f"CREATE TABLE {table} (n integer NOT NULL)")
        await conn.exec_driver_sql(f"INSERT INTO {table} VALUES (0)")
    return table


@pytest.mark.postgresql
async def test_transaction_locks_serialize_read_modify_write(
    pair: tuple[PostgreSQLDistributedLock, PostgreSQLDistributedLock], schema: str
) -> None:
    table = await _counter_table(pair[0], schema)

    async def increment(locks: PostgreSQLDistributedLock) -> None:
        async with locks.engine.begin() as conn:
            await locks.acquire_in(conn, "counter", timeout=30)
            n = (await conn.exec_driver_sql(f"SELECT n FROM {table}")).scalar_one()
            await asyncio.sleep(0.002)
            await conn.exec_driver_sql(f"UPDATE {table} SET n = $1", (n + 1,))

    await asyncio.gather(*(increment(pair[i % 2]) for i in range(16)))
    async with pair[0].engine.connect() as conn:
        assert (await conn.exec_driver_sql(f"SELECT n FROM {table}")).scalar_one() == 16


@pytest.mark.postgresql
@pytest.mark.parametrize("end", ["commit", "rollback"])
async def test_transaction_lock_lasts_until_the_transaction_ends(
    pair: tuple[PostgreSQLDistributedLock, PostgreSQLDistributedLock], end: str
) -> None:
    first, second = pair
    async with first.engine.connect() as conn:
        await conn.begin()
        await first.acquire_in(conn, "xact", timeout=5)
        assert await second.is_locked("xact")
        assert await second.try_acquire("xact") is None
        with pytest.raises(LockTimeoutError):
            await second.acquire("xact", timeout=0.2)
        await (conn.commit() if end == "commit" else conn.rollback())
        assert not await second.is_locked("xact")
        taken = await second.try_acquire("xact")
        assert taken is not None
        await taken.release()


@pytest.mark.postgresql
async def test_transaction_lock_timeout_keeps_the_transaction_usable(
    pair: tuple[PostgreSQLDistributedLock, PostgreSQLDistributedLock], schema: str
) -> None:
    first, second = pair
    table = await _counter_table(first, schema)
    held = await second.acquire("xact-busy")
    async with first.engine.begin() as conn:
        await conn.exec_driver_sql("SET LOCAL lock_timeout = '7s'")
        await conn.exec_driver_sql(f"UPDATE {table} SET n = 41")
        with pytest.raises(LockTimeoutError):
            await first.acquire_in(conn, "xact-busy", timeout=0.2)
        with pytest.raises(LockTimeoutError):
            await first.acquire_in(conn, "xact-busy", timeout=0)
        await first.acquire_in(conn, "xact-free", timeout=5)
        await conn.exec_driver_sql(f"UPDATE {table} SET n = n + 1")
        # The caller's own lock_timeout is back once the lock is taken.
        assert (await conn.exec_driver_sql("SHOW lock_timeout")).scalar_one() == "7s"
    await held.release()
    async with first.engine.connect() as conn:
        assert (await conn.exec_driver_sql(f"SELECT n FROM {table}")).scalar_one() == 42
    assert not await first.is_locked("xact-busy")
    assert not await first.is_locked("xact-free")


@pytest.mark.postgresql
async def test_transaction_lock_in_a_session(
    pair: tuple[PostgreSQLDistributedLock, PostgreSQLDistributedLock],
) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    first, second = pair
    sessions = async_sessionmaker(first.engine)
    async with sessions() as session, session.begin():
        await first.acquire_in(session, "orm", timeout=5)
        assert await second.try_acquire("orm") is None
    assert not await second.is_locked("orm")


@pytest.mark.postgresql
async def test_lost_connection_is_detected(
    pair: tuple[PostgreSQLDistributedLock, PostgreSQLDistributedLock],
) -> None:
    first, second = pair
    handle = await first.acquire("fragile")
    assert handle.held
    await handle.check()
    await _terminate(second, await _holder_pid(first, "fragile"))
    async with asyncio.timeout(10):
        while not handle.lost:  # noqa: ASYNC110 - asyncpg notices the end, no event to await
            await asyncio.sleep(0.01)
    assert not handle.held
    assert not await handle.alive()
    with pytest.raises(LockLostError) as raised:
        await handle.check()
    assert raised.value.name == "fragile"
    taken = await second.acquire("fragile", timeout=5)  # the server let the lock go
    await taken.release()
    await handle.release()
    assert _checked_out(first) == 0


@pytest.mark.postgresql
async def test_block_whose_lock_was_lost_raises(
    pair: tuple[PostgreSQLDistributedLock, PostgreSQLDistributedLock],
) -> None:
    first, second = pair

    async def work_while_the_lock_is_lost() -> None:
        async with first.acquire("fragile-block", timeout=5):
            await _terminate(second, await _holder_pid(first, "fragile-block"))
            taken = await second.acquire("fragile-block", timeout=5)  # someone else got in
            await taken.release()

    with pytest.raises(LockLostError):
        await work_while_the_lock_is_lost()
    assert not await second.is_locked("fragile-block")
