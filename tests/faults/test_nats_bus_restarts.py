"""A throw-away nats-server restarted (stopped gracefully, or killed) while a publisher and
two competing consumers of one group run on `NATSEventBus`.

The publisher counts a batch as acknowledged when `publish` returned; one that raised is
sent again with the same events (JetStream drops those it already stored, by event id).
Required: every acknowledged event reaches the group, its effect applied exactly once past
the inbox (`InboxHandler`; a killed server forgets the acknowledgements it had not yet
written down, so a kill redelivers dozens of handled events, which the inbox drops), no
event appears that was never published, nothing is dead-lettered, and nobody restarts
anything by hand. The server's store directory survives the restart, as a real
deployment's does; the shared server is never touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from eventsource.bus.nats import NATSEventBus, NATSEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.exceptions import BusConnectionError
from eventsource.outbox import InboxHandler, InMemoryInboxRepository
from eventsource.testing import contract_registry
from eventsource.testing.bus import cart_events, eventually
from eventsource.testing.events import ItemAdded
from tests import _services

pytestmark = [pytest.mark.faults, pytest.mark.nats]

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayNATS:
    """`nats-server -js` on a free loopback port with its own store directory; stopped by
    its own process id."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = str(directory / "store")

    def start(self) -> None:
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.store],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        endpoint = _services.Endpoint("throw-away NATS", "127.0.0.1", self.port)
        deadline = time.monotonic() + 15
        while not _services.is_reachable(endpoint, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.directory / "server.log").read_text()[-2000:])
            time.sleep(0.05)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, how)
            process.wait(20)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    if not Path(NATS_SERVER).exists():
        _services.unavailable(f"no nats-server binary at {NATS_SERVER} for a throw-away server")
    throwaway = ThrowawayNATS(tmp_path)
    throwaway.start()
    try:
        yield throwaway
    finally:
        throwaway.stop(signal.SIGKILL)


def _bus(url: str, group: str) -> NATSEventBus:
    config = NATSEventBusConfig(
        url=url,
        subject_prefix="faults",
        consumer_group=group,
        ack_wait=2.0,
        fetch_wait=0.5,
        request_timeout=1.0,
        reconnect_interval=0.1,
        reconnect_timeout=2.0,
        retry_delay=0.05,
        retry_delay_max=0.2,
    )
    return NATSEventBus(config, registry=contract_registry)


async def _more(acked: list[DomainEvent], count: int) -> None:
    """Wait until `count` more events are acknowledged."""
    target = len(acked) + count
    await eventually(lambda: len(acked) >= target, 60, f"{count} more acknowledged events")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill"])
async def test_a_restart_loses_no_acked_event_and_the_inbox_drops_redeliveries(
    server: ThrowawayNATS, how: signal.Signals
) -> None:
    inbox = InMemoryInboxRepository()
    effects: Counter[UUID] = Counter()

    def apply(event: DomainEvent) -> None:
        effects[event.event_id] += 1

    handlers = []
    consumers = [_bus(server.url, "projector") for _ in range(2)]
    for consumer in consumers:
        handler = InboxHandler(apply, inbox, "projector")
        handlers.append(handler)
        consumer.subscribe(ItemAdded, handler)
        await consumer.start_consuming()
    publisher = _bus(server.url, "publisher")
    acked: list[DomainEvent] = []
    sent: set[UUID] = set()
    failures = 0
    stop = asyncio.Event()

    async def publish() -> None:
        nonlocal failures
        while not stop.is_set():
            batch = cart_events(3, 2)
            sent.update(event.event_id for event in batch)
            while True:
                try:
                    await publisher.publish(batch)
                    break
                except BusConnectionError:
                    failures += 1  # not acknowledged: send the same events again
                    await asyncio.sleep(0.05)
            acked.extend(batch)

    publishing = asyncio.create_task(publish())
    try:
        # A short outage, carried over by the retry budget (reconnect_timeout = 2 s), then
        # a long one, which makes publishes raise and the publisher send them again.
        for outage in (0.3, 3.0):
            await _more(acked, 60)
            await asyncio.to_thread(server.stop, how)
            await asyncio.sleep(outage)
            await asyncio.to_thread(server.start)
        await _more(acked, 60)
        stop.set()
        await asyncio.wait_for(publishing, 60)
        ids = {event.event_id for event in acked}
        await eventually(lambda: set(effects) >= ids, 90, "every acknowledged event handled")
        await asyncio.sleep(3 * 2.0)  # past ack_wait: redeliveries of what was in flight
    finally:
        stop.set()
        for bus in (*consumers, publisher):
            await asyncio.wait_for(bus.shutdown(timeout=5), 30)
    assert failures >= 1, "no publish ran into the long outage: the test proved nothing"
    duplicated = {event_id: n for event_id, n in effects.items() if n > 1}
    assert duplicated == {}, f"{len(duplicated)} events applied twice past the inbox"
    assert set(effects) <= sent, "an event was handled that was never published"
    assert sum(c.stats.dead_lettered for c in consumers) == 0
    assert await consumers[0].dead_letters() == []
    received = sum(c.stats.received for c in consumers)
    assert received >= len(ids)
