"""`DatabaseProjection` fed by a subscription a page at a time: one transaction and one
checkpoint write per page, a failing event isolated and dead-lettered alone, parked aggregates,
exact counts, and two subscriptions on one projection that never apply an event twice."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventsource import DomainEvent, EventRegistry, ExpectedVersion, Position, StoredEvent
from eventsource.projections import DatabaseProjection, TransactionalCheckpoints, handles
from eventsource.repositories import DeadLetterStatus, InMemoryDLQRepository
from eventsource.subscriptions import SubscriptionConfig, SubscriptionManager

pytestmark = pytest.mark.postgresql

registry = EventRegistry()

CONFIG = SubscriptionConfig(
    batch_size=50,
    poll_interval=0.05,
    retry_base=0.001,
    retry_cap=0.01,
    max_attempts=2,
    circuit_breaker=None,
)


class Counted(DomainEvent, registry=registry):
    n: int


class Other(DomainEvent, registry=registry):
    """Of a type the projection does not handle (filtered out by the store's read)."""

    n: int


class Log(DatabaseProjection):
    """Logs each application with the id of the transaction that made it; fails on the values
    in `poison` (a handler's own failure, not the database's)."""

    def __init__(
        self,
        engine: AsyncEngine,
        checkpoints: TransactionalCheckpoints,
        schema: str,
        *,
        poison: frozenset[int] = frozenset(),
        pause: float = 0.0,
    ) -> None:
        super().__init__(engine, checkpoints)
        self.poison = poison
        self._log = text(
            f'INSERT INTO "{schema}".applied (event_id, aggregate_id, n)'
            f" SELECT :e, :a, :n FROM (SELECT pg_sleep({pause})) AS slow"
        )

    @handles(Counted)
    async def _counted(self, connection: AsyncConnection, event: Counted) -> None:
        await connection.execute(
            self._log, {"e": event.event_id, "a": event.aggregate_id, "n": event.n}
        )
        if event.n in self.poison:  # after writing: the batch's writes must roll back
            raise RuntimeError(f"cannot take {event.n}")


class Setup:
    def __init__(self, url: str, schema: str) -> None:
        from eventsource import PostgreSQLEventStore
        from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository

        self.url = url
        self.schema = schema
        self.store = PostgreSQLEventStore.from_url(url, schema=schema, registry=registry)
        self.checkpoints = PostgreSQLCheckpointRepository(self.store.engine, schema=schema)

    async def start(self) -> None:
        import asyncpg

        await self.store.create_schema()
        self.admin = await asyncpg.connect(self.url)
        await self.admin.execute(
            f'CREATE TABLE "{self.schema}".applied (id bigserial PRIMARY KEY, event_id uuid,'
            " aggregate_id uuid, n int, txid xid8 NOT NULL DEFAULT pg_current_xact_id())"
        )

    async def close(self) -> None:
        await self.admin.close()
        await self.checkpoints.close()
        await self.store.close()

    def log(self, **options: Any) -> Log:
        return Log(self.store.engine, self.checkpoints, self.schema, **options)

    async def append(self, aggregate: UUID, values: list[int], other: bool = False) -> Position:
        events: list[DomainEvent] = [Counted(n=v) for v in values]
        if other:
            events.append(Other(n=0))
        version = await self.store.get_stream_version(aggregate)
        expected = ExpectedVersion.NO_STREAM if version == 0 else version
        result = await self.store.append_events(aggregate, "Counter", events, expected)
        assert result.last_position is not None
        return result.last_position

    async def applied(self) -> list[tuple[UUID, UUID, int, int]]:
        rows = await self.admin.fetch(
            f'SELECT event_id, aggregate_id, n, txid::text::bigint FROM "{self.schema}".applied'
            " ORDER BY id"
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def feed(self) -> list[StoredEvent]:
        return [s async for s in self.store.read_all() if s.event_type == "Counted"]


@pytest.fixture
async def setup(postgres_url: str, schema: str) -> Any:
    built = Setup(postgres_url, schema)
    await built.start()
    try:
        yield built
    finally:
        await built.close()


def applied_once_in_feed_order(
    applied: list[tuple[UUID, UUID, int, int]], feed: list[StoredEvent]
) -> None:
    ids = [a[0] for a in applied]
    assert len(ids) == len(set(ids)), "an event was applied twice"
    assert ids == [s.event_id for s in feed], "not every event applied once, in feed order"


async def test_catch_up_applies_a_page_per_transaction_with_one_checkpoint_write(
    setup: Setup,
) -> None:
    """230 events (and events of another type, the last of the feed among them) in pages of
    50: five transactions, each moving the checkpoint once; the checkpoint counts every event
    once, and names the last event applied."""
    aggregates = [uuid4() for _ in range(10)]
    for round_ in range(23):
        for k, aggregate in enumerate(aggregates):
            last = await setup.append(aggregate, [round_ * 10 + k], other=k == 9)
    projection = setup.log()
    async with SubscriptionManager(setup.store, setup.checkpoints, config=CONFIG) as manager:
        subscription = manager.subscribe(projection)
        await subscription.wait_for(last, timeout=30)
        processed = subscription.processed
    applied = await setup.applied()
    feed = await setup.feed()
    checkpoint = await setup.checkpoints.get(projection.name)
    applied_once_in_feed_order(applied, feed)
    assert len(feed) == 230
    assert len({a[3] for a in applied}) == math.ceil(230 / CONFIG.batch_size)
    assert processed == 230
    assert projection.already_applied == 0
    assert checkpoint is not None
    assert checkpoint.position == last  # the events of another type count as processed
    assert checkpoint.events_processed == 230
    assert (checkpoint.event_id, checkpoint.event_type) == (feed[-1].event_id, "Counted")


async def test_a_failing_event_is_dead_lettered_alone_and_its_page_applied_once(
    setup: Setup,
) -> None:
    """A handler fails (after writing) on two events in the middle of pages: their pages roll
    back and go again one event at a time; exactly those two events are dead-lettered, every
    other event is applied once, in order, and the counts hold."""
    aggregate = uuid4()
    last = await setup.append(aggregate, list(range(120)))
    dead_letters = InMemoryDLQRepository()
    projection = setup.log(poison=frozenset({37, 88}))
    async with SubscriptionManager(
        setup.store, setup.checkpoints, dead_letters, config=CONFIG
    ) as manager:
        subscription = manager.subscribe(projection)
        await subscription.wait_for(last, timeout=30)
        counts = (subscription.processed, subscription.dead_lettered)
    applied = await setup.applied()
    feed = await setup.feed()
    letters = await dead_letters.list(projection.name)
    checkpoint = await setup.checkpoints.get(projection.name)
    poisoned = [s for s in feed if s.event.n in (37, 88)]  # type: ignore[attr-defined]
    applied_once_in_feed_order(applied, [s for s in feed if s not in poisoned])
    assert sorted(letter.event_id for letter in letters) == sorted(s.event_id for s in poisoned)
    assert [letter.attempts for letter in letters] == [CONFIG.max_attempts] * 2
    assert counts == (120, 2)
    assert checkpoint is not None
    assert checkpoint.position == last
    assert checkpoint.events_processed == 120


async def test_a_parked_aggregate_splits_a_page_and_is_released_in_order(setup: Setup) -> None:
    """With `park_aggregate`, the events after a dead-lettered one of its aggregate are parked
    untried, also when they are in the same page; the other aggregate's events are applied;
    a successful retry releases the parked ones, in order."""
    blocked, free = uuid4(), uuid4()
    for n in range(0, 40, 2):
        await setup.append(blocked, [n])
        last = await setup.append(free, [n + 1])
    dead_letters = InMemoryDLQRepository()
    projection = setup.log(poison=frozenset({10}))
    config = replace(CONFIG, park_aggregate=True)
    async with SubscriptionManager(
        setup.store, setup.checkpoints, dead_letters, config=config
    ) as manager:
        subscription = manager.subscribe(projection)
        await subscription.wait_for(last, timeout=30)
        before = [a[2] for a in await setup.applied()]
        failed = await dead_letters.list(projection.name, status=DeadLetterStatus.FAILED)
        poison = next(letter for letter in failed if letter.attempts > 0)
        projection.poison = frozenset()
        assert await manager.retry_dead_letter(poison.id)
    after = await setup.applied()
    assert before == [n for n in range(40) if n % 2 or n < 10]
    assert len(failed) == 1 + len(range(12, 40, 2))
    released = [a[2] for a in after[len(before) :]]
    assert released == list(range(10, 40, 2))
    assert len({a[0] for a in after}) == len(after) == 40
    assert await dead_letters.count(projection.name, status=DeadLetterStatus.FAILED) == 0


async def test_two_subscriptions_of_one_projection_never_apply_an_event_twice(
    setup: Setup,
) -> None:
    """Two managers (no leases) run the same projection at once, as a lease holder that has
    not yet noticed its lease going would: each page transaction locks the checkpoint first
    and skips what the other applied, so every event is applied exactly once."""
    aggregates = [uuid4() for _ in range(6)]
    for n in range(50):
        for aggregate in aggregates:
            last = await setup.append(aggregate, [n])
    config = replace(CONFIG, batch_size=20)
    first, second = setup.log(pause=0.002), setup.log(pause=0.002)
    async with (
        SubscriptionManager(setup.store, setup.checkpoints, config=config) as one,
        SubscriptionManager(setup.store, setup.checkpoints, config=config) as two,
    ):
        subscriptions = [one.subscribe(first), two.subscribe(second)]
        await asyncio.gather(*(s.wait_for(last, timeout=60) for s in subscriptions))
    applied = await setup.applied()
    feed = await setup.feed()
    checkpoint = await setup.checkpoints.get(first.name)
    applied_once_in_feed_order(applied, feed)
    assert first.already_applied + second.already_applied > 0  # they did run at once
    assert checkpoint is not None
    assert checkpoint.events_processed == len(feed) == 300


async def test_live_events_are_applied_as_they_arrive(setup: Setup) -> None:
    """Live, a page holds what is there: each append is applied without waiting for more."""
    projection = setup.log()
    aggregate = uuid4()
    async with SubscriptionManager(setup.store, setup.checkpoints, config=CONFIG) as manager:
        subscription = manager.subscribe(projection)
        for n in range(5):
            position = await setup.append(aggregate, [n])
            await subscription.wait_for(position, timeout=10)
            assert [a[2] for a in await setup.applied()] == list(range(n + 1))
    checkpoint = await setup.checkpoints.get(projection.name)
    assert checkpoint is not None
    assert checkpoint.events_processed == 5


async def test_an_undecodable_event_in_a_page_is_dead_lettered_alone(setup: Setup) -> None:
    """A corrupt payload in the middle of a page fails the page; the event is dead-lettered
    (with its raw row) and the others are applied once."""
    aggregate = uuid4()
    last = await setup.append(aggregate, list(range(30)))
    feed = await setup.feed()
    corrupt = feed[12]
    await setup.admin.execute(
        f"UPDATE {setup.store.table} SET payload = '\"corrupt\"'::jsonb WHERE event_id = $1",
        corrupt.event_id,
    )
    dead_letters = InMemoryDLQRepository()
    projection = setup.log()
    async with SubscriptionManager(
        setup.store, setup.checkpoints, dead_letters, config=CONFIG
    ) as manager:
        subscription = manager.subscribe(projection)
        await subscription.wait_for(last, timeout=30)
    applied = await setup.applied()
    (letter,) = await dead_letters.list(projection.name)
    applied_once_in_feed_order(applied, [s for s in feed if s is not corrupt])
    assert letter.event_id == corrupt.event_id


async def test_a_page_is_one_project_span(setup: Setup) -> None:
    """Tracing: one `project <subscription>` span per page, with its event count and last
    position; the one-event deliveries that find a failing event have a span each, and the
    events after it go in a batch again."""
    from eventsource.observability import EVENT_COUNT, POSITION, SUBSCRIPTION
    from eventsource.testing import capture_telemetry

    aggregate = uuid4()
    last = await setup.append(aggregate, list(range(120)))
    projection = setup.log(poison=frozenset({110}))
    config = replace(CONFIG, max_attempts=1)
    with capture_telemetry() as telemetry:
        async with SubscriptionManager(
            setup.store, setup.checkpoints, InMemoryDLQRepository(), config=config
        ) as manager:
            subscription = manager.subscribe(projection)
            await subscription.wait_for(last, timeout=30)
        spans = telemetry.spans(f"project {projection.name}")
    pages = [s for s in spans if EVENT_COUNT in s.attributes]
    assert [s.attributes[EVENT_COUNT] for s in pages] == [50, 50, 20, 9]
    assert pages[-1].attributes[POSITION] == str(last)
    assert {s.attributes[SUBSCRIPTION] for s in spans} == {projection.name}
    assert len(spans) - len(pages) == 11  # the failed page's events up to 110, one at a time
