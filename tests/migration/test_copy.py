"""Copy, resume, verify, tenants and checkpoint mapping between real backends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID, uuid4

import pytest

from eventsource import EventStore, ExpectedVersion, Position, StoredEvent
from eventsource.config import create_checkpoint_repository, create_event_store
from eventsource.exceptions import MigrationConflictError, MigrationError
from eventsource.migration import StoreMigration
from eventsource.migration.urls import open_migration
from eventsource.repositories import Checkpoint, CheckpointRepository
from eventsource.subscriptions import CheckpointStrategy, SubscriptionConfig, SubscriptionManager
from tests.migration._model import Deposited, assert_same_events, registry, write


@contextlib.asynccontextmanager
async def app_store(url: str) -> AsyncIterator[EventStore]:
    """The application's view of a store: its event classes registered, tables created."""
    async with create_event_store(url, registry=registry) as store:
        create_schema = getattr(store, "create_schema", None)
        if create_schema is not None:
            await create_schema()
        yield store


async def drain(migration: StoreMigration) -> None:
    """Copy until caught up with a source nobody writes to any more."""
    await migration.copy()
    assert (await migration.status()).behind == 0


async def eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `condition()` holds (polled; the timeout only guards against a hang)."""
    async with asyncio.timeout(60):
        while not await condition():  # noqa: ASYNC110 - several stores, no one signal
            await asyncio.sleep(0.01)


async def wait_for_events(store: EventStore, count: int) -> None:
    async def enough() -> bool:
        return await store.count_events() >= count

    await eventually(enough)


async def _true(value: bool) -> bool:
    return value


async def test_copy_while_writers_run(urls: tuple[str, str]) -> None:
    source_url, target_url = urls
    async with (
        app_store(source_url) as source,
        app_store(target_url) as target,
        open_migration(source_url, target_url, batch_size=25) as migration,
    ):
        stop_writers, stop_copy = asyncio.Event(), asyncio.Event()
        writers = [asyncio.create_task(write(source, stop_writers)) for _ in range(4)]
        copier = asyncio.create_task(
            migration.copy(follow=True, stop=stop_copy, poll_interval=0.05)
        )
        await wait_for_events(source, 400)
        assert not copier.done()
        stop_writers.set()
        written = sum(await asyncio.gather(*writers))

        async def caught_up() -> bool:
            return (await migration.status()).behind == 0

        await eventually(caught_up)
        stop_copy.set()
        assert await copier == written
        assert await assert_same_events(source, target) == written
        report = await migration.verify()
        assert report.ok, report.differences
        assert (report.source_events, report.target_events) == (written, written)
        status = await migration.status()
        assert (status.behind, status.copied, status.behind_seconds) == (0, written, 0.0)
        assert status.position == await source.current_position()


class CrashingCheckpoints(CheckpointRepository):
    """Checkpoints that fail on the n-th save: a copier dying between appends and their
    checkpoint."""

    def __init__(self, inner: CheckpointRepository, fail_on: int) -> None:
        self.inner, self.fail_on, self.saves = inner, fail_on, 0

    async def get(self, name: str) -> Checkpoint | None:
        return await self.inner.get(name)

    async def save(
        self,
        name: str,
        position: Position,
        *,
        event_id: UUID | None = None,
        event_type: str | None = None,
        processed: int = 1,
    ) -> None:
        self.saves += 1
        if self.saves == self.fail_on:
            raise RuntimeError("killed before the checkpoint")
        await self.inner.save(name, position, processed=processed)

    async def reset(self, name: str, position: Position | None = None) -> None:
        await self.inner.reset(name, position)

    async def list(self) -> list[Checkpoint]:
        return await self.inner.list()


async def test_resume_after_a_crash_between_appends_and_checkpoint(urls: tuple[str, str]) -> None:
    source_url, target_url = urls
    async with (
        app_store(source_url) as source,
        app_store(target_url) as target,
        open_migration(source_url, target_url) as migration,
    ):
        stop = asyncio.Event()
        writers = [asyncio.create_task(write(source, stop, streams=3)) for _ in range(3)]
        await wait_for_events(source, 150)
        crashing = StoreMigration(
            migration.source,
            migration.target,
            state=CrashingCheckpoints(migration.state, fail_on=3),
            batch_size=7,
        )
        with pytest.raises(RuntimeError, match="killed"):
            await crashing.copy()
        # Resumed with other page boundaries: runs overlap what the crashed copy appended
        # only in part, and the writers go on meanwhile.
        resumed = StoreMigration(
            migration.source, migration.target, state=migration.state, batch_size=5
        )
        await resumed.copy()  # up to the head as of the call: ends while writers go on
        stop.set()
        written = sum(await asyncio.gather(*writers))
        assert (await resumed.status()).behind > 0
        await drain(resumed)
        assert await assert_same_events(source, target) == written
        assert (await resumed.verify()).ok


async def test_resume_appends_only_what_the_target_lacks(urls: tuple[str, str]) -> None:
    """A crash after a page's append: the next run's page covers it and goes beyond (other
    page size), so the target holds the first part of that run already."""
    source_url, target_url = urls
    async with (
        app_store(source_url) as source,
        app_store(target_url) as target,
        open_migration(source_url, target_url) as migration,
    ):
        stream = uuid4()
        await source.append_events(stream, "Account", _deposits(10), ExpectedVersion.NO_STREAM)
        crashing = StoreMigration(
            migration.source,
            migration.target,
            state=CrashingCheckpoints(migration.state, fail_on=1),
            batch_size=4,
        )
        with pytest.raises(RuntimeError, match="killed"):
            await crashing.copy()
        assert await target.get_stream_version(stream) == 4
        resumed = StoreMigration(
            migration.source, migration.target, state=migration.state, batch_size=6
        )
        assert await resumed.copy() == 10
        assert await assert_same_events(source, target) == 10
        assert (await resumed.verify()).ok


async def test_one_tenant_at_a_time(urls: tuple[str, str]) -> None:
    source_url, target_url = urls
    tenant_a, tenant_b = uuid4(), uuid4()
    async with app_store(source_url) as source, app_store(target_url) as target:
        stop = asyncio.Event()
        writers = [
            asyncio.create_task(write(source, stop, tenant_id=tenant))
            for tenant in (tenant_a, tenant_b, None)
        ]
        await wait_for_events(source, 200)
        stop.set()
        await asyncio.gather(*writers)
        async with open_migration(source_url, target_url, tenant_id=tenant_a) as migration:
            await drain(migration)
            assert await target.count_events() == await source.count_events(_tenant(tenant_a))
            await assert_same_events(source, target, tenant_a)
            assert (await migration.verify()).ok
        async with open_migration(source_url, target_url, tenant_id=tenant_b) as migration:
            await drain(migration)
            await assert_same_events(source, target, tenant_b)
            assert (await migration.verify()).ok
        assert await target.count_events(_tenant(None)) == (
            await source.count_events(_tenant(tenant_a))
            + await source.count_events(_tenant(tenant_b))
        )


def _tenant(tenant_id: UUID | None) -> object:
    from eventsource import ReadOptions

    return ReadOptions(tenant_id=tenant_id)


async def test_a_subscription_resumes_on_the_target_where_it_stopped(
    urls: tuple[str, str],
) -> None:
    source_url, target_url = urls
    handled: list[UUID] = []

    async def record(stored: StoredEvent) -> None:
        handled.append(stored.event.event_id)

    config = SubscriptionConfig(checkpoint=CheckpointStrategy.every_event(), poll_interval=0.05)
    async with (
        app_store(source_url) as source,
        app_store(target_url) as target,
        create_checkpoint_repository(source_url) as source_checkpoints,
        create_checkpoint_repository(target_url) as target_checkpoints,
        open_migration(source_url, target_url, batch_size=30) as migration,
    ):
        stop = asyncio.Event()
        writers = [asyncio.create_task(write(source, stop)) for _ in range(3)]
        async with SubscriptionManager(source, source_checkpoints, config=config) as manager:
            manager.subscribe(record, name="ledger")
            await eventually(lambda: _true(len(handled) >= 80))
        # stopped mid-feed, writers still running
        await wait_for_events(source, len(handled) + 100)
        stop.set()
        await asyncio.gather(*writers)
        await drain(migration)
        (mapped,) = await migration.map_checkpoints(source_checkpoints, target_checkpoints)
        assert mapped.name == "ledger"
        expected = [s.event.event_id async for s in source.read_all()]
        async with SubscriptionManager(target, target_checkpoints, config=config) as manager:
            manager.subscribe(record, name="ledger")
            await eventually(lambda: _true(len(handled) >= len(expected)))
        assert handled == expected


async def test_verify_reports_what_differs(urls: tuple[str, str]) -> None:
    source_url, target_url = urls
    async with (
        app_store(source_url) as source,
        app_store(target_url) as target,
        open_migration(source_url, target_url) as migration,
    ):
        streams = [uuid4() for _ in range(3)]
        for stream in streams:
            await source.append_events(stream, "Account", _deposits(3), ExpectedVersion.NO_STREAM)
        await drain(migration)
        assert (await migration.verify()).ok
        await target.append_events(streams[0], "Account", _deposits(1), 3)
        stranger = uuid4()
        await target.append_events(stranger, "Account", _deposits(2), ExpectedVersion.NO_STREAM)
        report = await migration.verify()
        assert not report.ok
        assert {
            (d.aggregate_id, d.source_count, d.target_count, d.reason) for d in report.differences
        } == {
            (streams[0], 3, 4, "event counts differ"),
            (stranger, 0, 2, "only in the target"),
        }
        # the source's own next event for that stream now conflicts: nothing is overwritten
        await source.append_events(streams[0], "Account", _deposits(1), 3)
        with pytest.raises(MigrationConflictError, match=str(streams[0])):
            await migration.copy()


async def test_a_checkpoint_beyond_the_copy_is_refused(urls: tuple[str, str]) -> None:
    source_url, target_url = urls
    async with app_store(source_url) as source, open_migration(source_url, target_url) as migration:
        result = await source.append_events(
            uuid4(), "Account", _deposits(2), ExpectedVersion.NO_STREAM
        )
        assert await migration.map_position(Position.START) == Position.START
        with pytest.raises(MigrationError, match="beyond what was copied"):
            await migration.map_position(result.positions[-1])
        await drain(migration)
        mapped = await migration.map_position(result.positions[0])
        assert mapped == (await migration.target.get_event(result.events[0].event_id)).position


def _deposits(n: int) -> list[Deposited]:
    from decimal import Decimal

    return [Deposited(amount=Decimal("1.10"), note="n", ratio=0.5) for _ in range(n)]


async def test_rollback_copies_the_targets_new_events_back(urls: tuple[str, str]) -> None:
    """After cutover the target took writes: the copy the other way skips what the source
    holds (by event id) and appends only the new events."""
    source_url, target_url = urls
    async with app_store(source_url) as source, app_store(target_url) as target:
        stop = asyncio.Event()
        writers = [asyncio.create_task(write(source, stop, streams=4)) for _ in range(2)]
        await wait_for_events(source, 60)
        stop.set()
        await asyncio.gather(*writers)
        async with open_migration(source_url, target_url, batch_size=8) as migration:
            await drain(migration)
        stop = asyncio.Event()
        writers = [asyncio.create_task(write(target, stop, streams=4)) for _ in range(2)]
        await wait_for_events(target, await source.count_events() + 40)
        stop.set()
        await asyncio.gather(*writers)
        async with open_migration(target_url, source_url, name="rollback") as back:
            await drain(back)
            assert (await back.verify()).ok
        assert await source.count_events() == await target.count_events()
        await assert_same_events(target, source)
