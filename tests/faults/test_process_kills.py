"""Processes SIGKILLed again and again while events keep coming: subscription workers that
share one subscription through PostgreSQL leases, and outbox relays that publish to Redis or
RabbitMQ for a consumer behind an inbox.

A SIGKILL gives the victim no chance to save, release or mark anything; each victim is
replaced by a fresh process (what a supervisor does), and no survivor is ever restarted.
Required: every acknowledged event's effect, each aggregate in version order; exactly once
where the design promises it (`DatabaseProjection`; the inbox in the handler's transaction),
at least once otherwise, with at most the event in flight at a kill handled twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text

from eventsource.bus import EventBus
from eventsource.events.base import DomainEvent
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.subscriptions.postgresql import lease_key
from eventsource.testing import contract_registry
from eventsource.testing.events import ItemAdded
from tests.faults._model import Acked, check_exactly_once_in_order, read_model, read_model_ddl
from tests.subscriptions._worker import Tick
from tests.subscriptions._worker import registry as tick_registry

pytestmark = [pytest.mark.faults, pytest.mark.postgresql]

ROOT = Path(__file__).resolve().parents[2]
CATCH_UP_SECONDS = 30.0
"""How long the survivors may take to handle what is left once the kills stop (generous)."""

Process = asyncio.subprocess.Process


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(CATCH_UP_SECONDS):
            while not await condition():  # noqa: ASYNC110 - polling other processes' progress
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {CATCH_UP_SECONDS} s: {what}") from None


class Child:
    """A worker process that prints `ready` once it runs; reads what it prints."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, module: str, *args: str) -> Self:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # warnings ("lease lost; standing by") land in the captured output
        )
        return cls(process)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            if line.startswith(b"ready"):
                self.ready.set()
            else:
                self.said(line)

    def said(self, line: bytes) -> None:
        """A line other than `ready`."""

    async def kill(self) -> None:
        if self.alive:
            self.process.kill()
        await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def stop(self) -> int:
        """A graceful stop once it runs (SIGTERM); its exit code."""
        try:
            async with asyncio.timeout(30):
                await self.ready.wait()
                self.process.send_signal(signal.SIGTERM)
                return await self.process.wait()
        except TimeoutError:
            await self.kill()
            return -1
        finally:
            await self.kill()


C = TypeVar("C", bound=Child)


async def _any_ready(children: Sequence[C]) -> C:
    """A random live child among those that run (waiting for the first if none does yet)."""
    live = [c for c in children if c.alive]
    waits = [asyncio.create_task(c.ready.wait()) for c in live]
    try:
        async with asyncio.timeout(CATCH_UP_SECONDS):
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return random.choice([c for c in live if c.ready.is_set()])


# -- 1. subscription workers -----------------------------------------------------------------

WORKERS = 3
CONSUMER_KILLS = 6
CLOCKS = 6
"""Aggregates the appender writes to, one event per append."""


async def _append_ticks(
    store: PostgreSQLEventStore, stop: asyncio.Event, acked: list[Acked]
) -> None:
    """Appends Tick(n=version) to random aggregates until `stop`; each acknowledged event."""
    versions = {uuid4(): 0 for _ in range(CLOCKS)}
    while not stop.is_set():
        clock = random.choice(list(versions))
        version = versions[clock] + 1
        tick = Tick(n=version)
        await store.append_events(clock, "Clock", [tick], version - 1)
        versions[clock] = version
        acked.append((tick.event_id, clock, version))
        await asyncio.sleep(random.uniform(0, 0.02))


async def _start_worker(url: str, schema: str, mode: str) -> Child:
    return await Child.start("tests.subscriptions._worker", url, schema, mode)


async def _lease_holder(admin: Any, key: int) -> int | None:
    """The pid of the worker process that holds the subscription's advisory lock."""
    holder = await admin.fetchval(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.classid::bigint = $1 AND l.objid::bigint = $2",
        (key >> 32) & 0xFFFFFFFF,
        key & 0xFFFFFFFF,
    )
    return None if holder is None else int(holder.removeprefix("worker-"))


def _first_deliveries(rows: list[tuple[UUID, int, UUID, int]]) -> dict[UUID, list[int]]:
    """Per aggregate, the versions in the order they were first handled."""
    seen: set[UUID] = set()
    order: dict[UUID, list[int]] = {}
    for event_id, _, aggregate_id, n in rows:
        if event_id not in seen:
            seen.add(event_id)
            order.setdefault(aggregate_id, []).append(n)
    return order


@pytest.mark.parametrize("mode", ["record", "ledger"])
async def test_killed_subscription_workers_lose_nothing(
    postgres_url: str, schema: str, mode: str
) -> None:
    """Three workers run one subscription (`record`: a plain handler, at least once;
    `ledger`: a `DatabaseProjection`, exactly once) while events are appended; every 0.5-1 s
    a worker is SIGKILLed (the lease holder every other time, else one at random) and a
    fresh one started. Then the survivors catch up on their own."""
    import asyncpg

    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=tick_registry)
    await store.create_schema()
    admin = await asyncpg.connect(postgres_url)
    workers: list[Child] = []
    acked: list[Acked] = []
    stop = asyncio.Event()
    appender: asyncio.Task[None] | None = None
    key = lease_key("shared" if mode == "record" else "LoggedTotals", f"{schema}.")
    holder_kills = 0
    try:
        await admin.execute(
            f'CREATE TABLE "{schema}".handled (seq bigserial PRIMARY KEY, event_id uuid NOT NULL,'
            " pid int NOT NULL, aggregate_id uuid NOT NULL, n int NOT NULL)"
        )
        await admin.execute(
            f'CREATE TABLE "{schema}".totals (total bigint NOT NULL, applied int NOT NULL)'
        )
        await admin.execute(f'INSERT INTO "{schema}".totals VALUES (0, 0)')
        workers += [await _start_worker(postgres_url, schema, mode) for _ in range(WORKERS)]
        appender = asyncio.create_task(_append_ticks(store, stop, acked))

        async def handling() -> bool:
            return bool(await admin.fetchval(f'SELECT count(*) > 0 FROM "{schema}".handled'))

        await _until(handling, "a worker started handling events")
        for kill in range(CONSUMER_KILLS):
            await asyncio.sleep(random.uniform(0.5, 1.0))
            holder = await _lease_holder(admin, key)
            if kill % 2 == 0:  # the holder, once a standby took the lease over
                async with asyncio.timeout(CATCH_UP_SECONDS):
                    while holder is None:
                        await asyncio.sleep(0.02)
                        holder = await _lease_holder(admin, key)
                victim = next(w for w in workers if w.process.pid == holder)
            else:
                victim = await _any_ready(workers)
            await victim.kill()
            holder_kills += victim.process.pid == holder
            workers.append(await _start_worker(postgres_url, schema, mode))
        stop.set()
        await appender
        assert acked, "nothing was appended"

        async def all_handled() -> bool:
            sql = f'SELECT count(DISTINCT event_id) FROM "{schema}".handled'
            return int(await admin.fetchval(sql)) >= len(acked)

        await _until(all_handled, "every acknowledged event handled after the kills")
        survivors = [w for w in workers if w.alive]
        exit_codes = [await w.stop() for w in survivors]
        rows = [
            (r[0], r[1], r[2], r[3])
            for r in await admin.fetch(
                f'SELECT event_id, pid, aggregate_id, n FROM "{schema}".handled ORDER BY seq'
            )
        ]
        total, applied = await admin.fetchrow(f'SELECT total, applied FROM "{schema}".totals')
    finally:
        stop.set()
        if appender is not None:
            with contextlib.suppress(Exception):
                await appender
        for worker in workers:
            await worker.kill()
        await admin.close()
        await store.close()

    assert len(survivors) == WORKERS
    assert exit_codes == [0] * WORKERS, "a surviving worker did not run until it was stopped"
    assert holder_kills >= CONSUMER_KILLS // 2, "the lease holder was not killed often enough"
    ids = [row[0] for row in rows]
    assert set(ids) == {a[0] for a in acked}, "handled events differ from the acknowledged ones"
    expected: dict[UUID, int] = {}
    for _, clock, version in acked:
        expected[clock] = version
    for clock, versions in _first_deliveries(rows).items():
        assert versions == list(range(1, expected[clock] + 1)), f"{clock} out of order: {versions}"
    duplicates = len(ids) - len(set(ids))
    if mode == "ledger":
        assert duplicates == 0, f"{duplicates} events applied twice by the DatabaseProjection"
        assert applied == len(acked)
        assert total == sum(version for _, _, version in acked)
    else:
        # a checkpoint after every event: only the event in flight at a kill runs again
        assert duplicates <= CONSUMER_KILLS, f"{duplicates} events handled again"


# -- 2. outbox relays ------------------------------------------------------------------------

RELAYS = 3
RELAY_KILLS = 8
"""Half of them right after a relay published a batch and before it marked it."""
CARTS = 8


@dataclass
class Broker:
    """One test's place on a broker: a URL, a prefix (Redis) or exchange (RabbitMQ), and
    the buses made there (their queues are deleted afterwards)."""

    url: str
    prefix: str
    buses: list[EventBus] = field(default_factory=list)

    def bus(self, group: str) -> EventBus:
        if self.url.startswith("amqp"):
            from eventsource.bus.rabbitmq import RabbitMQEventBus, RabbitMQEventBusConfig

            config = RabbitMQEventBusConfig(
                url=self.url, exchange=self.prefix, consumer_group=group
            )
            bus: EventBus = RabbitMQEventBus(config, registry=contract_registry)
        else:
            from eventsource.bus.redis import RedisEventBus, RedisEventBusConfig

            redis_config = RedisEventBusConfig(
                url=self.url, stream_prefix=self.prefix, consumer_group=group
            )
            bus = RedisEventBus(redis_config, registry=contract_registry)
        self.buses.append(bus)
        return bus


@pytest.fixture
def redis_broker(redis_url: str, redis_prefix: str) -> Broker:
    """The test's stream prefix on Redis (`redis_prefix` deletes its keys afterwards)."""
    return Broker(redis_url, redis_prefix)


@pytest.fixture
async def rabbitmq_broker(rabbitmq_url: str) -> AsyncIterator[Broker]:
    """An exchange of the test's own on RabbitMQ; it and its buses' queues are deleted
    afterwards."""
    import aio_pika

    from eventsource.bus.rabbitmq import RabbitMQEventBus

    place = Broker(rabbitmq_url, f"es-test-{uuid4().hex[:12]}")
    yield place
    connection = await aio_pika.connect(place.url)
    async with connection:
        channel = await connection.channel()
        for bus in place.buses:
            assert isinstance(bus, RabbitMQEventBus)
            for queue in bus.queue_names:
                await channel.queue_delete(queue)
        await channel.exchange_delete(place.prefix)


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ]
)
def broker(request: pytest.FixtureRequest) -> Broker:
    place = request.getfixturevalue(f"{request.param}_broker")
    assert isinstance(place, Broker)
    return place


class Relay(Child):
    """A relay process in `handshake` mode: lets each published batch be marked, unless told
    to die right after the next publish."""

    def __init__(self, process: Process) -> None:
        super().__init__(process)
        self.kill_after_publish = False
        self.killed_after_publish = asyncio.Event()

    def said(self, line: bytes) -> None:
        assert self.process.stdin is not None
        if not line.startswith(b"published") or self.killed_after_publish.is_set():
            return
        if self.kill_after_publish:
            self.process.kill()  # published, not marked: the batch goes out again
            self.killed_after_publish.set()
            return
        with contextlib.suppress(ConnectionError):
            self.process.stdin.write(b"go\n")


async def _start_relay(broker: Broker, url: str, schema: str) -> Relay:
    return await Relay.start(
        "tests.outbox._relay_worker",
        *("postgresql", url, schema, broker.url, broker.prefix, "handshake"),
    )


async def _append_items(
    store: PostgreSQLEventStore, stop: asyncio.Event, acked: list[Acked]
) -> None:
    """Appends 1-3 events at a time to random carts until `stop`; each acknowledged event."""
    versions = {uuid4(): 0 for _ in range(CARTS)}
    while not stop.is_set():
        cart = random.choice(list(versions))
        version = versions[cart]
        events = [ItemAdded(name=f"item-{version + k}") for k in range(1, random.randint(2, 4))]
        await store.append_events(cart, "Cart", events, version)
        for k, event in enumerate(events, start=1):
            acked.append((event.event_id, cart, version + k))
        versions[cart] = version + len(events)
        await asyncio.sleep(random.uniform(0.01, 0.06))


async def test_killed_relays_publish_everything_and_the_inbox_applies_it_once(
    postgres_url: str, schema: str, broker: Broker
) -> None:
    """Relays publish the outbox while events are appended; 8 times one is SIGKILLed (every
    other time between publishing a batch and marking it, else at a random moment) and a
    fresh one started. The consumer records each event in the inbox in the transaction of its
    effect (a counter, not idempotent): each event's effect once, each cart in order."""
    import asyncpg

    from eventsource.outbox import PostgreSQLInboxRepository, PostgreSQLOutboxRepository

    admin = await asyncpg.connect(postgres_url)
    store = PostgreSQLEventStore.from_url(
        postgres_url, schema=schema, registry=contract_registry, outbox=True
    )
    await store.create_schema()
    outbox = PostgreSQLOutboxRepository.for_store(store)
    inbox = PostgreSQLInboxRepository.for_store(store)
    async with store.engine.begin() as conn:
        for statement in read_model_ddl(schema):
            await conn.exec_driver_sql(statement)
    bump = text(f'UPDATE "{schema}".counter SET n = n + 1')
    log = text(
        f'INSERT INTO "{schema}".applied (event_id, aggregate_id, version) VALUES (:e, :a, :v)'
    )
    dropped = 0

    async def apply(event: DomainEvent) -> None:
        nonlocal dropped
        async with store.engine.begin() as conn:
            if not await inbox.using(conn).record("effects", event.event_id):
                dropped += 1
                return
            await conn.execute(bump)
            await conn.execute(
                log, {"e": event.event_id, "a": event.aggregate_id, "v": event.aggregate_version}
            )

    consumer = broker.bus("effects")
    consumer.subscribe(ItemAdded, apply)
    await consumer.start_consuming()  # bound before anything is published
    relays: list[Relay] = []
    acked: list[Acked] = []
    stop = asyncio.Event()
    appender = asyncio.create_task(_append_items(store, stop, acked))
    after_publish = 0
    try:
        relays += [await _start_relay(broker, postgres_url, schema) for _ in range(RELAYS)]
        for kill in range(RELAY_KILLS):
            victim = await _any_ready(relays)
            if kill % 2 == 0:
                victim.kill_after_publish = True
                async with asyncio.timeout(CATCH_UP_SECONDS):
                    await victim.killed_after_publish.wait()
                after_publish += 1
            else:
                await asyncio.sleep(random.uniform(0.1, 0.5))
            await victim.kill()
            relays.append(await _start_relay(broker, postgres_url, schema))
        stop.set()
        await appender

        async def all_applied() -> bool:
            counter = int(await admin.fetchval(f'SELECT n FROM "{schema}".counter'))
            return counter >= len(acked) and (await outbox.stats()).pending == 0

        await _until(all_applied, "every appended event published, marked and applied")
        await consumer.stop_consuming()
        count, applied = await read_model(admin, schema)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await appender
        for relay in relays:
            await relay.kill()
        for bus in broker.buses:
            await bus.shutdown()
        await inbox.close()
        await outbox.close()
        await store.close()
        await admin.close()

    assert after_publish == RELAY_KILLS // 2
    assert dropped >= after_publish, "the batches of relays killed before marking came again"
    check_exactly_once_in_order(count, applied, acked)
    for cart in {a[1] for a in acked}:
        versions = [v for _, aggregate, v in applied if aggregate == cart]
        assert versions == list(range(1, len(versions) + 1)), f"cart {cart}: {versions}"
