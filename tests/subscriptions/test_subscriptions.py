"""Subscriptions on every event store: catch-up then live, no gap and no duplicate, retries
and dead letters, pause/resume, filters, read-your-writes, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from eventsource import (
    DomainEvent,
    EventRegistry,
    EventStore,
    ExpectedVersion,
    Position,
    StoredEvent,
)
from eventsource.projections import DeclarativeProjection, ProjectionRegistry, handles
from eventsource.repositories import (
    DeadLetterStatus,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
)
from eventsource.subscriptions import (
    CheckpointStrategy,
    Subscription,
    SubscriptionConfig,
    SubscriptionManager,
    SubscriptionState,
)
from tests._stores import STORE_KINDS, open_event_store

registry = EventRegistry()

FAST = SubscriptionConfig(batch_size=7, poll_interval=0.05, retry_base=0.001, retry_cap=0.01)


class Added(DomainEvent, registry=registry):
    n: int


class Noise(DomainEvent, registry=registry):
    n: int


class Recorder(DeclarativeProjection):
    """Records what it sees; fails on the values in `poison`."""

    def __init__(self, poison: frozenset[int] = frozenset()) -> None:
        self.seen: list[int] = []
        self.ids: list[UUID] = []
        self.poison = poison
        self.failures = 0

    @handles(Added)
    async def _added(self, event: Added) -> None:
        if event.n in self.poison:
            self.failures += 1
            raise ValueError(f"cannot take {event.n}")
        self.seen.append(event.n)
        self.ids.append(event.event_id)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(request, registry, tmp_path) as opened:
        yield opened


async def append(store: EventStore, *values: int, noise: bool = False) -> Position:
    events: list[DomainEvent] = [Added(n=v) for v in values]
    if noise:
        events.append(Noise(n=0))
    result = await store.append_events(uuid4(), "Counter", events, ExpectedVersion.NO_STREAM)
    assert result.last_position is not None
    return result.last_position


async def test_catch_up_then_live_without_gap_or_duplicate(store: EventStore) -> None:
    for n in range(0, 30, 3):
        await append(store, n, n + 1, n + 2)
    recorder = Recorder()
    checkpoints = InMemoryCheckpointRepository()
    async with SubscriptionManager(store, checkpoints, config=FAST) as manager:
        subscription = manager.subscribe(recorder)
        for n in range(30, 50):
            last = await append(store, n)
        await subscription.wait_for(last, timeout=10)
        assert recorder.seen == list(range(50))
        assert subscription.state is SubscriptionState.LIVE
        health = await manager.health()
        assert health.ready
        assert health.subscriptions[0].events_behind == 0
    checkpoint = await checkpoints.get("Recorder")
    assert checkpoint is not None
    assert checkpoint.position == last
    assert checkpoint.events_processed == 50


async def test_concurrent_writers_are_delivered_exactly_once(store: EventStore) -> None:
    recorder = Recorder()
    expected: list[int] = []

    async def writer(w: int) -> None:
        for i in range(15):
            values = [w * 1000 + i * 10 + k for k in range(1 + (w + i) % 3)]
            await append(store, *values, noise=(i % 4 == 0))
            expected.extend(values)
            await asyncio.sleep(random.uniform(0, 0.003))

    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as manager:
        subscription = manager.subscribe(recorder)
        await asyncio.gather(*(writer(w) for w in range(8)))
        await subscription.wait_for(await store.current_position(), timeout=20)
    assert len(recorder.ids) == len(set(recorder.ids)), "an event was delivered twice"
    assert sorted(recorder.seen) == sorted(expected)
    for w in range(8):  # each stream's order, and each writer's order, is kept
        mine = [v for v in recorder.seen if v // 1000 == w]
        assert mine == sorted(mine)


@pytest.mark.postgresql
async def test_delayed_commits_are_neither_missed_nor_repeated(postgres_url: str) -> None:
    """Transactions that commit late and out of order, some rolled back, while the
    subscription is live: it delivers exactly the committed events, each once."""
    import asyncpg
    from sqlalchemy import text

    from eventsource import PostgreSQLEventStore

    schema = f"es_sub_{uuid4().hex[:12]}"
    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await store.create_schema()
    recorder = Recorder()
    committed: list[int] = []
    rng = random.Random(5)
    try:
        async with SubscriptionManager(
            store, InMemoryCheckpointRepository(), config=FAST
        ) as manager:
            subscription = manager.subscribe(recorder)

            async def writer(w: int) -> None:
                for t in range(6):
                    async with store.engine.connect() as conn:
                        tx = await conn.begin()
                        values = [w * 1000 + t * 10 + k for k in range(rng.randint(1, 3))]
                        for v in values:  # one statement per event: positions interleave
                            await store.using(conn).append_events(
                                uuid4(), "Counter", [Added(n=v)], ExpectedVersion.NO_STREAM
                            )
                        await conn.execute(text("SELECT pg_sleep(:s)"), {"s": rng.random() / 20})
                        if rng.random() < 0.2:
                            await tx.rollback()
                        else:
                            await tx.commit()
                            committed.extend(values)

            await asyncio.gather(*(writer(w) for w in range(10)))
            await subscription.wait_for(await store.current_position(), timeout=20)
        assert len(recorder.ids) == len(set(recorder.ids))
        assert sorted(recorder.seen) == sorted(committed)
    finally:
        await store.close()
        conn = await asyncpg.connect(postgres_url)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def test_poison_event_goes_to_the_dlq_while_the_rest_flows(store: EventStore) -> None:
    recorder = Recorder(poison=frozenset({13}))
    dead_letters = InMemoryDLQRepository()
    config = SubscriptionConfig(
        batch_size=5, poll_interval=0.05, max_attempts=3, retry_base=0.001, retry_cap=0.01
    )
    async with SubscriptionManager(
        store, InMemoryCheckpointRepository(), dead_letters, config=config
    ) as manager:
        subscription = manager.subscribe(recorder)
        last = await append(store, *range(20))
        await subscription.wait_for(last, timeout=10)
        health = await manager.health()
    assert recorder.seen == [n for n in range(20) if n != 13]
    assert recorder.failures == 3
    (letter,) = await dead_letters.list("Recorder")
    assert letter.attempts == 3
    assert letter.status is DeadLetterStatus.FAILED
    assert "ValueError: cannot take 13" in letter.error
    assert "_added" in letter.traceback
    assert health.healthy
    assert health.subscriptions[0].dead_lettered == 1


async def test_without_a_dlq_a_poison_event_stops_the_subscription_and_is_kept(
    store: EventStore,
) -> None:
    checkpoints = InMemoryCheckpointRepository()
    config = dataclass_replace(FAST, max_attempts=2)
    failing = Recorder(poison=frozenset({4}))
    async with SubscriptionManager(store, checkpoints, config=config) as manager:
        subscription = manager.subscribe(failing)
        await append(store, *range(10))
        await reaches(subscription, SubscriptionState.FAILED)
        assert not (await manager.health()).healthy
    assert failing.seen == [0, 1, 2, 3]
    assert subscription.last_error == "ValueError: cannot take 4"

    # Fixed and restarted, it resumes at the event it could not handle.
    fixed = Recorder()
    async with SubscriptionManager(store, checkpoints, config=config) as manager:
        subscription = manager.subscribe(fixed)
        await subscription.wait_for(await store.current_position(), timeout=10)
    assert fixed.seen == [4, 5, 6, 7, 8, 9]


class SlowSaves(InMemoryCheckpointRepository):
    """Checkpoints whose saves take a while, as a remote database's do."""

    async def save(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)
        return await super().save(*args, **kwargs)


async def test_a_failed_subscription_has_saved_its_checkpoint_when_it_says_failed(
    store: EventStore,
) -> None:
    checkpoints = SlowSaves()
    config = dataclass_replace(
        FAST, max_attempts=1, checkpoint=CheckpointStrategy("periodic", 3600.0)
    )
    failing = Recorder(poison=frozenset({4}))
    async with SubscriptionManager(store, checkpoints, config=config) as manager:
        subscription = manager.subscribe(failing)
        await append(store, *range(10))
        await reaches(subscription, SubscriptionState.FAILED)
        saved = await checkpoints.get(subscription.name)
        assert saved is not None, "FAILED was visible before the checkpoint was saved"
        assert saved.position == subscription.position
    assert failing.seen == [0, 1, 2, 3]


async def test_restart_resumes_from_the_checkpoint(store: EventStore) -> None:
    checkpoints = InMemoryCheckpointRepository()
    first = Recorder()
    async with SubscriptionManager(store, checkpoints, config=FAST) as manager:
        subscription = manager.subscribe(first)
        await subscription.wait_for(await append(store, 1, 2, 3), timeout=10)
    await append(store, 4, 5)
    second = Recorder()
    async with SubscriptionManager(store, checkpoints, config=FAST) as manager:
        subscription = manager.subscribe(second)
        await subscription.wait_for(await append(store, 6), timeout=10)
    assert first.seen == [1, 2, 3]
    assert second.seen == [4, 5, 6]


async def test_start_from_end_takes_only_new_events(store: EventStore) -> None:
    await append(store, 1, 2)
    recorder = Recorder()
    config = dataclass_replace(FAST, start_from="end")
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=config) as m:
        subscription = m.subscribe(recorder)
        await asyncio.sleep(0.1)
        await subscription.wait_for(await append(store, 3), timeout=10)
    assert recorder.seen == [3]


async def test_filters_and_waiting_for_an_event_the_subscription_skips(store: EventStore) -> None:
    recorder = Recorder()
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        subscription = m.subscribe(recorder)
        assert subscription.config.event_types == frozenset({"Added"})
        await append(store, 1, noise=True)
        noise_only = await store.append_events(uuid4(), "Counter", [Noise(n=1)], 0)
        assert noise_only.last_position is not None
        # A position the subscription filters out still counts as reached once caught up.
        await subscription.wait_for(noise_only.last_position, timeout=10)
    assert recorder.seen == [1]


async def test_pause_and_resume(store: EventStore) -> None:
    recorder = Recorder()
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        subscription = m.subscribe(recorder)
        await subscription.wait_for(await append(store, 1), timeout=10)
        subscription.pause()
        await reaches(subscription, SubscriptionState.PAUSED)
        await append(store, 2, 3)
        await asyncio.sleep(0.2)
        assert recorder.seen == [1]
        health = await m.health()
        assert health.subscriptions[0].events_behind == 2
        assert not health.ready
        subscription.resume()
        await subscription.wait_for(await store.current_position(), timeout=10)
    assert recorder.seen == [1, 2, 3]


async def test_wait_for_times_out(store: EventStore) -> None:
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        subscription = m.subscribe(Recorder())
        with pytest.raises(TimeoutError):
            await subscription.wait_for(Position(2**40, 1), timeout=0.1)


async def test_checkpoint_strategies(store: EventStore) -> None:
    saves: list[int] = []

    class CountingCheckpoints(InMemoryCheckpointRepository):
        async def save(self, name: str, position: Position, **kwargs: object) -> None:
            saves.append(int(kwargs.get("processed", 1)))  # type: ignore[call-overload]
            await super().save(name, position, **kwargs)  # type: ignore[arg-type]

    every_event = dataclass_replace(FAST, checkpoint=CheckpointStrategy.every_event())
    checkpoints = CountingCheckpoints()
    async with SubscriptionManager(store, checkpoints, config=every_event) as m:
        subscription = m.subscribe(Recorder())
        await subscription.wait_for(await append(store, 1, 2, 3, 4), timeout=10)
    assert saves[:4] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="positive"):
        CheckpointStrategy.periodic(0)


async def test_plain_handlers_and_a_projection_registry(store: EventStore) -> None:
    seen: list[str] = []

    async def audit(stored: StoredEvent) -> None:
        seen.append(stored.event_type)

    first, second = Recorder(), Recorder()
    second.name = "Second"
    group = ProjectionRegistry([first, second], name="both")
    assert group.interested_in() == frozenset({"Added"})
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        audit_subscription = m.subscribe(audit, name="audit")
        group_subscription = m.subscribe(group)
        last = await append(store, 7, noise=True)
        await audit_subscription.wait_for(last, timeout=10)
        await group_subscription.wait_for(last, timeout=10)
        with pytest.raises(ValueError, match="exists already"):
            m.subscribe(audit, name="audit")
        with pytest.raises(ValueError, match="needs a name"):
            m.subscribe(audit)
    assert seen == ["Added", "Noise"]
    assert first.seen == second.seen == [7]
    with pytest.raises(ValueError, match="registered already"):
        group.register_projection(Recorder())


async def test_run_until_shutdown_stops_on_a_signal(store: EventStore) -> None:
    recorder = Recorder()
    manager = SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST)
    subscription = manager.subscribe(recorder)
    await append(store, 1)
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, os.kill, os.getpid(), signal.SIGUSR1)
    async with asyncio.timeout(10):
        await manager.run_until_shutdown(signals=(signal.SIGUSR1,))
    assert subscription.state is SubscriptionState.STOPPED
    assert recorder.seen == [1]


async def reaches(subscription: Subscription, state: SubscriptionState) -> None:
    """Wait (up to 10 s) until the subscription's loop has moved to `state`."""
    async with asyncio.timeout(10):
        while subscription.state is not state:  # noqa: ASYNC110 - the loop sets no event
            await asyncio.sleep(0.01)


def dataclass_replace(config: SubscriptionConfig, **changes: object) -> SubscriptionConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


async def test_dead_letters_can_be_retried_and_resolved(store: EventStore) -> None:
    recorder = Recorder(poison=frozenset({2}))
    dead_letters = InMemoryDLQRepository()
    config = dataclass_replace(FAST, max_attempts=1)
    async with SubscriptionManager(
        store, InMemoryCheckpointRepository(), dead_letters, config=config
    ) as manager:
        subscription = manager.subscribe(recorder)
        await subscription.wait_for(await append(store, 1, 2, 3), timeout=10)
        (letter,) = await dead_letters.list()
        # still broken: the retry fails, the dead letter is FAILED again with 2 attempts
        assert await manager.retry_dead_letter(letter.id) is False
        again = await dead_letters.get(letter.id)
        assert again is not None
        assert (again.status, again.attempts) == (DeadLetterStatus.FAILED, 2)
        # fixed: the retry delivers it and resolves the dead letter
        recorder.poison = frozenset()
        assert await manager.retry_dead_letter(letter.id) is True
        resolved = await dead_letters.get(letter.id)
        assert resolved is not None
        assert (resolved.status, resolved.resolved_by) == (DeadLetterStatus.RESOLVED, "retry")
        with pytest.raises(ValueError, match="not waiting"):
            await manager.retry_dead_letter(letter.id)
        with pytest.raises(LookupError):
            await manager.retry_dead_letter(uuid4())
    assert recorder.seen == [1, 3, 2]


@pytest.mark.postgresql
async def test_database_projection_rolls_back_a_failed_attempt(postgres_url: str) -> None:
    """A handler that wrote and then failed leaves nothing behind: the retry applies it once."""
    import asyncpg
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncConnection

    from eventsource import PostgreSQLEventStore
    from eventsource.projections import DatabaseProjection
    from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository

    schema = f"es_dbp_{uuid4().hex[:12]}"

    class Sums(DatabaseProjection):
        failures_left = 2

        @handles(Added)
        async def _added(self, connection: AsyncConnection, event: Added) -> None:
            await connection.execute(
                text(f'UPDATE "{schema}".sums SET total = total + :n, applied = applied + 1'),
                {"n": event.n},
            )
            if event.n == 5 and self.failures_left:
                self.failures_left -= 1
                raise RuntimeError("failed after writing")

    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await store.create_schema()
    checkpoints = PostgreSQLCheckpointRepository(store.engine, schema=schema)
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE TABLE "{schema}".sums (total int, applied int)')
        await admin.execute(f'INSERT INTO "{schema}".sums VALUES (0, 0)')
        sums = Sums(store.engine, checkpoints)
        async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
            subscription = m.subscribe(sums)
            await subscription.wait_for(await append(store, *range(10)), timeout=10)
        total, applied = await admin.fetchrow(f'SELECT total, applied FROM "{schema}".sums')
        checkpoint = await checkpoints.get("Sums")
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
        await checkpoints.close()
        await store.close()
    assert (total, applied) == (45, 10)
    assert sums.failures_left == 0
    assert checkpoint is not None
    assert checkpoint.events_processed >= 10  # moved inside each event's transaction


async def test_circuit_breaker_stops_a_systemic_failure_from_filling_the_dlq(
    store: EventStore,
) -> None:
    from eventsource.subscriptions import CircuitBreaker

    down = True
    seen: list[int] = []

    async def fragile(stored: StoredEvent) -> None:
        if down:  # not an infrastructure error, which would be retried without a dead letter
            raise RuntimeError("the read model refuses every write")
        assert isinstance(stored.event, Added)
        seen.append(stored.event.n)

    dead_letters = InMemoryDLQRepository()
    config = dataclass_replace(
        FAST, max_attempts=1, circuit_breaker=CircuitBreaker(failures=2, cooldown=0.05)
    )
    async with SubscriptionManager(
        store, InMemoryCheckpointRepository(), dead_letters, config=config
    ) as manager:
        subscription = manager.subscribe(fragile, name="fragile")
        last = await append(store, *range(6))
        await reaches(subscription, SubscriptionState.CIRCUIT_OPEN)
        await asyncio.sleep(0.2)  # several cooldowns: still open, nothing more parked
        assert await dead_letters.count() == 1
        assert not (await manager.health()).ready
        down = False
        await subscription.wait_for(last, timeout=10)
        assert subscription.state is SubscriptionState.LIVE
    assert seen == [1, 2, 3, 4, 5]  # 0 is in the dead-letter queue, nothing else
    (letter,) = await dead_letters.list()
    assert "RuntimeError" in letter.error
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker(failures=0)


async def test_rebuild_replays_from_the_beginning_with_progress(store: EventStore) -> None:
    class Totals(DeclarativeProjection):
        def __init__(self) -> None:
            self.total = 0
            self.resets = 0

        @handles(Added)
        def _added(self, event: Added) -> None:
            self.total += event.n  # not idempotent: a replay without reset would double it

        async def reset(self) -> None:
            self.total = 0
            self.resets += 1

    totals = Totals()
    checkpoints = InMemoryCheckpointRepository()
    reports: list[bool] = []
    async with SubscriptionManager(store, checkpoints, config=FAST) as manager:
        subscription = manager.subscribe(totals)
        await subscription.wait_for(await append(store, *range(1, 21)), timeout=10)
        assert totals.total == 210
        rebuilt = await manager.rebuild(
            "Totals", progress=lambda p: reports.append(p.done), timeout=10
        )
        assert rebuilt is manager["Totals"]
        assert rebuilt is not subscription
        assert totals.total == 210
        assert totals.resets == 1
        # and it goes on live afterwards
        await rebuilt.wait_for(await append(store, 5), timeout=10)
        assert totals.total == 215
    assert reports[-1] is True
    checkpoint = await checkpoints.get("Totals")
    assert checkpoint is not None
    assert checkpoint.events_processed == 21  # counted again from zero by the replay


async def test_replace_builds_the_new_version_beside_the_old_then_switches(
    store: EventStore,
) -> None:
    class RevenueV2(Recorder):
        name = "RecorderV2"

    old = Recorder()
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        m.subscribe(old)
        await m["Recorder"].wait_for(await append(store, 1, 2, 3), timeout=10)
        new = RevenueV2()
        subscription = await m.replace("Recorder", new, timeout=10)
        assert [s.name for s in m.subscriptions] == ["RecorderV2"]
        assert new.seen == [1, 2, 3]  # caught up before the switch
        await subscription.wait_for(await append(store, 4), timeout=10)
    assert new.seen == [1, 2, 3, 4]
    assert old.seen == [1, 2, 3]  # the old version stopped at the switch
    with pytest.raises(ValueError, match="another name"):
        await SubscriptionManager(store, InMemoryCheckpointRepository()).replace(
            "Recorder", Recorder()
        )


async def test_partitions_split_aggregates_and_keep_their_order(store: EventStore) -> None:
    handled: list[tuple[UUID, int]] = []

    async def record(stored: StoredEvent) -> None:
        assert isinstance(stored.event, Added)
        await asyncio.sleep(0)  # let the partitions interleave
        handled.append((stored.aggregate_id, stored.event.n))

    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        parts = m.subscribe_partitioned(record, 3, name="split")
        assert [p.name for p in parts] == ["split.p0of3", "split.p1of3", "split.p2of3"]
        aggregates = [uuid4() for _ in range(12)]
        for round_ in range(5):  # interleaved: each aggregate's events spread over the feed
            for aggregate in aggregates:
                await store.append_events(aggregate, "Counter", [Added(n=round_)], round_)
        head = await store.current_position()
        for part in parts:
            await part.wait_for(head, timeout=10)
        assert len(handled) == 60  # each event once, by the one partition of its aggregate
        for aggregate in aggregates:
            assert [n for a, n in handled if a == aggregate] == [0, 1, 2, 3, 4]
        # A rebuilt partition replays its own aggregates only.
        handled.clear()
        rebuilt = await m.rebuild("split.p1of3", timeout=10)
        assert rebuilt is m["split.p1of3"]
        assert rebuilt is not parts[1]
        mine = [a for a in aggregates if a.int % 3 == 1]
        assert sorted(handled) == sorted((a, n) for a in mine for n in range(5))
    from eventsource.subscriptions.partitions import partition_of

    assert len({partition_of(a, 3) for a in aggregates}) > 1
    with pytest.raises(ValueError, match="2 or more"):
        m.subscribe_partitioned(record, 1, name="x")


async def test_partition_budget_spreads_and_takes_over() -> None:
    from eventsource.subscriptions.partitions import PartitionBudget

    class LocalLeases:
        """Leases within this process: a real, if tiny, LeaseProvider."""

        def __init__(self) -> None:
            self.taken: set[str] = set()

        async def try_acquire(self, name: str) -> Any:
            if name in self.taken:
                return None
            self.taken.add(name)
            leases = self

            class Held:
                async def alive(self) -> bool:
                    return name in leases.taken

                async def release(self) -> None:
                    leases.taken.discard(name)

            return Held()

    shared = LocalLeases()
    first = PartitionBudget(shared, per_process=2, takeover_after=0.1)
    second = PartitionBudget(shared, per_process=2, takeover_after=0.1)
    got = [await first.try_acquire(f"p{i}") for i in range(4)]
    assert [g is not None for g in got] == [True, True, False, False]  # over its share
    assert shared.taken == {"p0", "p1"}
    assert await second.try_acquire("p2") is not None
    assert await second.try_acquire("p3") is not None
    # the second process dies: its partitions become free; the first takes them after a while
    shared.taken -= {"p2", "p3"}
    assert await first.try_acquire("p2") is None  # free, but only just
    await asyncio.sleep(0.15)
    taken_over = await first.try_acquire("p2")
    assert taken_over is not None
    assert first.held == 3
    await taken_over.release()
    assert first.held == 2


@pytest.mark.postgresql
async def test_leases_of_different_namespaces_do_not_block_each_other(postgres_url: str) -> None:
    from eventsource import PostgreSQLEventStore
    from eventsource.subscriptions.postgresql import PostgreSQLLeases

    store = PostgreSQLEventStore.from_url(postgres_url, schema=f"es_ns_{uuid4().hex[:8]}")
    try:
        first = PostgreSQLLeases(store.engine, namespace="app-a")
        second = PostgreSQLLeases(store.engine, namespace="app-b")
        held = await first.try_acquire("Revenue")
        assert held is not None
        assert await first.try_acquire("Revenue") is None  # same namespace: taken
        other = await second.try_acquire("Revenue")  # another namespace: free
        assert other is not None
        assert PostgreSQLLeases.for_store(store).namespace == f"{store.schema}."
        await held.release()
        await other.release()
        assert not await held.alive()
    finally:
        await store.close()


async def test_a_stopped_manager_starts_again_from_its_checkpoints(store: EventStore) -> None:
    recorder = Recorder()
    manager = SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST)
    subscription = manager.subscribe(recorder)
    async with manager:
        await subscription.wait_for(await append(store, 1), timeout=10)
    assert subscription.state is SubscriptionState.STOPPED
    await append(store, 2)
    async with manager:
        await subscription.wait_for(await append(store, 3), timeout=10)
    assert recorder.seen == [1, 2, 3]


async def test_wait_for_a_position_reached_before_a_restart_returns(store: EventStore) -> None:
    """After a restart, the checkpoint already at the target and nothing new appended:
    `wait_for` returns once the checkpoint is loaded, not at the next poll or its timeout."""
    checkpoints = InMemoryCheckpointRepository()
    first = SubscriptionManager(store, checkpoints, config=FAST)
    subscription = first.subscribe(Recorder())
    async with first:
        last = await append(store, 1, 2)
        await subscription.wait_for(last, timeout=10)
    second = SubscriptionManager(
        store, checkpoints, config=dataclass_replace(FAST, poll_interval=30)
    )
    again = second.subscribe(Recorder())
    async with second:
        await again.wait_for(last, timeout=10)
        assert again.position == last
