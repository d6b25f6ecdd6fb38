"""The services the suite relies on answer with their real protocols.

These prove the fixtures in conftest.py point at working servers before the backend suites use
them, and that the Kafka broker started by the session really speaks Kafka.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit
from uuid import uuid4

import pytest


@pytest.mark.postgresql
async def test_postgresql_answers(postgres_url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(postgres_url)
    try:
        version = await connection.fetchval("SHOW server_version_num")
        assert int(version) >= 140000, "the store relies on xid8 / pg_current_xact_id (PG 13+)"
    finally:
        await connection.close()


@pytest.mark.redis
async def test_redis_round_trip(redis_url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    key = f"eventsource-test:{uuid4()}"
    try:
        await client.set(key, b"ping", ex=30)
        assert await client.get(key) == b"ping"
    finally:
        await client.delete(key)
        await client.aclose()


@pytest.mark.rabbitmq
async def test_rabbitmq_round_trip(rabbitmq_url: str) -> None:
    import aio_pika

    connection = await aio_pika.connect_robust(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(b"ping"), routing_key=queue.name)
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        await message.ack()
        assert message.body == b"ping"


def test_nats_greets(nats_url: str) -> None:
    parts = urlsplit(nats_url)
    with socket.create_connection((parts.hostname, parts.port or 4222), timeout=5) as sock:
        greeting = sock.recv(4096)
    assert greeting.startswith(b"INFO "), greeting[:80]
    assert b'"jetstream":true' in greeting, "NATS must run with JetStream (-js)"


@pytest.mark.kafka
async def test_kafka_broker_round_trip(kafka_bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"eventsource-test-{uuid4().hex[:12]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"ping", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"group-{uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert (message.key, message.value) == (b"k", b"ping")


@pytest.mark.postgresql
@pytest.mark.parametrize("require", ["", "1"])
def test_a_postgresql_not_set_up_for_the_tests_is_one_clear_message(
    postgres_url: str, require: str
) -> None:
    """Reachable, but the database does not exist: a clear skip, or under
    EVENTSOURCE_REQUIRE_SERVICES one error that stops the run, never driver errors per test."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    wrong = urlsplit(postgres_url)._replace(path=f"/es_missing_{uuid4().hex[:8]}").geturl()
    env = {
        **os.environ,
        "EVENTSOURCE_TEST_POSTGRES_URL": wrong,
        "EVENTSOURCE_REQUIRE_SERVICES": require,
    }
    root = Path(__file__).resolve().parents[1]
    target = "tests/test_services.py::test_postgresql_answers"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", target],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = run.stdout + run.stderr
    assert "is reachable but not set up for the tests" in output
    assert "does not exist" in output
    if require:
        assert run.returncode != 0
        assert "1 passed" not in output
    else:
        assert run.returncode == 0
        assert "1 skipped" in output
