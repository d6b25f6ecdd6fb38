"""`NATSEventBus` on the real NATS JetStream server: the bus contract (connections cut for
real by a TCP proxy between each bus and the server), then what only JetStream does
(subjects per aggregate, de-duplication by event id, retries held back by a NAK, the
work-queue retry stream, refusals)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import nats
import pytest
from nats.js.errors import NotFoundError

from eventsource.bus import EventBus
from eventsource.bus.nats import NATSEventBus, NATSEventBusConfig, subject_token
from eventsource.testing import EventBusContract, contract_registry
from tests.bus._tcp_proxy import TCPProxy

pytestmark = pytest.mark.nats

FAST: dict[str, Any] = {
    "ack_wait": 1.0,
    "fetch_wait": 0.5,
    "reconnect_timeout": 5.0,
    "reconnect_interval": 0.05,
    "request_timeout": 1.0,
}
"""Redelivery after 1 s instead of 30, so the contract's crash test stays short."""


@pytest.fixture
async def bus_prefix(nats_url: str) -> AsyncIterator[str]:
    """A subject prefix of one test; both of its streams are deleted afterwards."""
    name = f"es-test-{uuid4().hex[:12]}"
    yield name
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        for stream in (subject_token(name), f"{subject_token(name)}-groups"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
    finally:
        await client.close()


def make(url: str, prefix: str, group: str = "main", **settings: Any) -> NATSEventBus:
    config = NATSEventBusConfig(
        url=url, subject_prefix=prefix, consumer_group=group, **{**FAST, **settings}
    )
    return NATSEventBus(config, registry=contract_registry)


class TestNATSEventBus(EventBusContract):
    @pytest.fixture(autouse=True)
    async def _namespace(self, nats_url: str, bus_prefix: str) -> AsyncIterator[None]:
        self.url, self.prefix = nats_url, bus_prefix
        self.proxies: dict[int, TCPProxy] = {}
        yield
        for proxy in self.proxies.values():
            await proxy.close()

    async def create_bus(self, group: str, **settings: Any) -> EventBus:
        """A bus that reaches the server through a proxy of its own (to cut its connection)."""
        target = urlsplit(self.url)
        config = NATSEventBusConfig(
            url=self.url, subject_prefix=self.prefix, consumer_group=group, **{**FAST, **settings}
        )
        proxy = TCPProxy(target.hostname or "127.0.0.1", target.port or 4222)
        await proxy.start()
        config.url = f"nats://127.0.0.1:{proxy.port}"
        bus = NATSEventBus(config, registry=contract_registry)
        self.proxies[id(bus)] = proxy
        return bus

    async def drop_connections(self, bus: EventBus) -> None:
        assert self.proxies[id(bus)].cut() >= 1, "the bus holds no connection to cut"
