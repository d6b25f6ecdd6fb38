"""The fault tools themselves: message framing, the proxy's faults, the cluster's restarts,
the backend killer. A fault test is only as good as the fault it injects."""

from __future__ import annotations

import struct

import pytest

from tests.faults._cluster import ThrowawayCluster
from tests.faults._kill import BackendKiller
from tests.faults._proxy import COMMIT_COMPLETE, PostgresProxy, command_tag, split_messages

pytestmark = [pytest.mark.faults, pytest.mark.postgresql]


def _connection_lost() -> tuple[type[BaseException], ...]:
    """What asyncpg raises on a connection the server or the proxy closed (which one depends
    on when the news arrives)."""
    import asyncpg

    return (
        OSError,
        asyncpg.InterfaceError,
        asyncpg.PostgresConnectionError,
        asyncpg.exceptions.InternalClientError,
        asyncpg.exceptions.AdminShutdownError,
    )


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", 4 + len(body)) + body


def test_split_messages_keeps_a_partial_message_for_later() -> None:
    ready = _message(b"Z", b"I")
    buffer = bytearray(COMMIT_COMPLETE + ready + _message(b"D", b"abcdef")[:7])
    assert list(split_messages(buffer)) == [COMMIT_COMPLETE, ready]
    assert len(buffer) == 7
    buffer += _message(b"D", b"abcdef")[7:]
    assert list(split_messages(buffer)) == [_message(b"D", b"abcdef")]
    assert buffer == b""
    with pytest.raises(ValueError, match="length"):
        list(split_messages(bytearray(b"C\x00\x00\x00\x01")))
    assert command_tag(COMMIT_COMPLETE) == "COMMIT"
    assert command_tag(_message(b"C", b"INSERT 0 1\x00")) == "INSERT"


async def test_proxy_drops_the_reply_to_a_commit_the_server_made(
    cluster: ThrowawayCluster, proxy: PostgresProxy, cluster_database: str
) -> None:
    import asyncpg

    direct = await asyncpg.connect(cluster.url(cluster_database))
    await direct.execute("CREATE TABLE t (n int)")
    client = await asyncpg.connect(proxy.url(cluster_database))
    try:
        proxy.drop_every = 2
        async with client.transaction():
            await client.execute("INSERT INTO t VALUES (1)")  # COMMIT 1: answered
        transaction = client.transaction()
        await transaction.start()
        await client.execute("INSERT INTO t VALUES (2)")
        with pytest.raises(_connection_lost()):
            await transaction.commit()  # COMMIT 2: made, its reply dropped
        assert client.is_closed()
        assert await direct.fetchval("SELECT array_agg(n ORDER BY n) FROM t") == [1, 2]
        assert (proxy.seen, proxy.dropped) == (2, 1)
    finally:
        await client.close()
        await direct.close()


async def test_proxy_drops_the_answer_to_an_autocommit_statement(
    cluster: ThrowawayCluster, proxy: PostgresProxy, cluster_database: str
) -> None:
    import asyncpg

    direct = await asyncpg.connect(cluster.url(cluster_database))
    await direct.execute("CREATE TABLE t (n int)")
    client = await asyncpg.connect(proxy.url(cluster_database))
    try:
        proxy.drop_tag, proxy.drop_every = "INSERT", 1
        with pytest.raises(_connection_lost()):
            await client.fetch("INSERT INTO t VALUES ($1) RETURNING n", 5)
        assert await direct.fetchval("SELECT sum(n) FROM t") == 5  # committed all the same
        assert (proxy.seen, proxy.dropped) == (1, 1)
    finally:
        await client.close()
        await direct.close()


async def test_proxy_delays_and_cuts(proxy: PostgresProxy, cluster_database: str) -> None:
    import asyncpg

    client = await asyncpg.connect(proxy.url(cluster_database))
    try:
        proxy.delay = 0.05
        assert await client.fetchval("SELECT 41 + 1") == 42  # delayed, still delivered
        proxy.delay = 0.0
        assert proxy.cut() == 1
        with pytest.raises(_connection_lost()):
            await client.fetchval("SELECT 1")
    finally:
        await client.close()
    again = await asyncpg.connect(proxy.url(cluster_database))
    try:
        assert await again.fetchval("SELECT 1") == 1
        assert proxy.connections == 2
    finally:
        await again.close()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_cluster_restarts_keep_what_was_committed(
    cluster: ThrowawayCluster, cluster_database: str, mode: str
) -> None:
    import asyncpg

    url = cluster.url(cluster_database)
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE t (n int); INSERT INTO t VALUES (7)")
    cluster.restart(mode)  # type: ignore[arg-type]
    with pytest.raises(_connection_lost()):
        await conn.fetchval("SELECT 1")
    await conn.close()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT sum(n) FROM t") == 7
    finally:
        await conn.close()


async def test_backend_killer_terminates_only_its_targets(
    cluster: ThrowawayCluster, cluster_database: str
) -> None:
    import asyncpg

    victim = await asyncpg.connect(
        cluster.url(cluster_database), server_settings={"application_name": "victim"}
    )
    bystander = await asyncpg.connect(cluster.url(cluster_database))
    admin = await asyncpg.connect(cluster.url())
    try:
        killer = BackendKiller(cluster.url(), application_name="victim")
        assert await killer.kill_once(admin) == 1
        with pytest.raises(_connection_lost()):
            await victim.fetchval("SELECT 1")
        assert await bystander.fetchval("SELECT 1") == 1
        by_database = BackendKiller(cluster.url(), database=cluster_database)
        assert await by_database.kill_once(admin) == 1  # the bystander; never the admin
        assert await admin.fetchval("SELECT 1") == 1
    finally:
        for conn in (victim, bystander, admin):
            await conn.close()
