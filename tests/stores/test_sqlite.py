from pathlib import Path

import pytest

from eventsource import EventRegistry, EventStore, SQLiteEventStore
from eventsource.testing import EventStoreContract, StreamListingContract

pytestmark = pytest.mark.sqlite


class TestSQLiteEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _database_file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    async def create_store(self, registry: EventRegistry) -> EventStore:
        return SQLiteEventStore(self.path, registry=registry)


class TestSQLiteInMemoryDatabase(EventStoreContract):
    async def create_store(self, registry: EventRegistry) -> EventStore:
        return SQLiteEventStore(":memory:", registry=registry)


class TestSQLiteStreamListing(StreamListingContract):
    @pytest.fixture(autouse=True)
    def _database_file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    async def create_store(self, registry: EventRegistry) -> EventStore:
        return SQLiteEventStore(self.path, table="cli_events", registry=registry)


async def test_separate_connections_on_one_file_exactly_one_wins(tmp_path: Path) -> None:
    """Several store instances (as several processes would) contend through SQLite's lock."""
    import asyncio
    from uuid import uuid4

    from eventsource import OptimisticLockError
    from eventsource.testing.events import ItemAdded, contract_registry

    path = tmp_path / "shared.db"
    stores = [SQLiteEventStore(path, registry=contract_registry) for _ in range(6)]
    for store in stores:
        await store.connect()
    cart = uuid4()
    try:
        for version in range(4):

            async def attempt(store: SQLiteEventStore, expected: int = version) -> bool:
                try:
                    await store.append_events(cart, "Cart", [ItemAdded(name="x")], expected)
                except OptimisticLockError:
                    return False
                return True

            outcomes = await asyncio.gather(*(attempt(s) for s in stores))
            assert sum(outcomes) == 1
        versions = [e.aggregate_version for e in (await stores[0].get_events(cart)).events]
        assert versions == [1, 2, 3, 4]
    finally:
        for store in stores:
            await store.close()


async def test_corrupt_row_raises_serialization_error(tmp_path: Path) -> None:
    import sqlite3
    from uuid import uuid4

    from eventsource import SerializationError
    from eventsource.testing.events import ItemAdded, contract_registry

    path = tmp_path / "corrupt.db"
    async with SQLiteEventStore(path, registry=contract_registry) as store:
        cart = uuid4()
        good, bad = ItemAdded(name="good"), ItemAdded(name="bad")
        await store.append_events(cart, "Cart", [good, bad], 0)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE events SET payload = '{not json' WHERE event_id = ?", (str(bad.event_id),)
        )
    async with SQLiteEventStore(path, registry=contract_registry) as store:
        with pytest.raises(SerializationError, match="ItemAdded"):
            await store.get_events(cart)
        assert (await store.get_event(good.event_id)).event.name == "good"  # type: ignore[attr-defined]


async def test_table_name_is_quoted_not_formatted(tmp_path: Path) -> None:
    from uuid import uuid4

    from eventsource.testing.events import ItemAdded, contract_registry

    odd = 'my "events"; DROP TABLE x'
    async with SQLiteEventStore(tmp_path / "t.db", registry=contract_registry, table=odd) as store:
        await store.append_events(uuid4(), "Cart", [ItemAdded(name="x")], 0)
        assert len([s async for s in store.read_all()]) == 1


async def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    from eventsource import EventStoreError

    store = SQLiteEventStore(tmp_path / "missing-dir" / "x.db")
    with pytest.raises(EventStoreError, match="cannot open"):
        await store.connect()


async def test_a_file_locked_past_the_busy_timeout_is_a_transient_error(tmp_path: Path) -> None:
    """Another process holding the write lock longer than `busy_timeout` is a transient
    fault (subscriptions back off and retry it), not a broken store."""
    import sqlite3
    from uuid import uuid4

    from eventsource.exceptions import TransientStoreError
    from eventsource.testing.events import ItemAdded, contract_registry

    path = tmp_path / "locked.db"
    async with SQLiteEventStore(path, registry=contract_registry, busy_timeout=0.1) as store:
        await store.append_events(uuid4(), "Cart", [ItemAdded(name="first")], 0)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(TransientStoreError, match="locked"):
                await store.append_events(uuid4(), "Cart", [ItemAdded(name="blocked")], 0)
            other.execute("ROLLBACK")
        finally:
            other.close()
        stored = await store.append_events(uuid4(), "Cart", [ItemAdded(name="later")], 0)
        assert stored.new_version == 1


def test_stores_of_one_file_share_its_lock_however_the_path_is_spelled(tmp_path: Path) -> None:
    import os

    from eventsource._internal.sqlite import file_lock

    (tmp_path / "dir").mkdir()
    os.symlink(tmp_path / "dir", tmp_path / "link")
    lock = file_lock(str(tmp_path / "dir" / "a.db"))
    assert lock is not None
    assert file_lock(str(tmp_path / "link" / ".." / "dir" / "a.db")) is lock
    assert file_lock(str(tmp_path / "link" / "a.db")) is lock
    assert file_lock(str(tmp_path / "dir" / "b.db")) is not lock
    assert file_lock(":memory:") is None


async def test_a_writer_queued_behind_another_of_this_process_times_out_transiently(
    tmp_path: Path,
) -> None:
    """Writers of one file in one process queue on an in-process lock: one that waits there
    past its `busy_timeout` gets the transient error SQLite's own lock gives, and the lock is
    free again once the writer in front has committed."""
    import asyncio
    import sqlite3
    from uuid import uuid4

    from eventsource.exceptions import TransientStoreError
    from eventsource.testing.events import ItemAdded, contract_registry

    path = tmp_path / "queued.db"
    patient = SQLiteEventStore(path, registry=contract_registry, busy_timeout=30)
    hasty = SQLiteEventStore(path, registry=contract_registry, busy_timeout=0.2)
    await patient.connect()
    await hasty.connect()
    other = sqlite3.connect(path, isolation_level=None)  # as another process would
    try:
        other.execute("BEGIN IMMEDIATE")
        first = asyncio.create_task(
            patient.append_events(uuid4(), "Cart", [ItemAdded(name="first")], 0)
        )
        lock = patient._file_lock
        assert lock is not None
        assert lock is hasty._file_lock
        for _ in range(1000):  # until the first writer holds the file's in-process lock
            if lock._lock.locked():
                break
            await asyncio.sleep(0.01)
        with pytest.raises(TransientStoreError, match="locked"):
            await hasty.append_events(uuid4(), "Cart", [ItemAdded(name="blocked")], 0)
        other.execute("COMMIT")
        assert (await first).new_version == 1
        later = await hasty.append_events(uuid4(), "Cart", [ItemAdded(name="later")], 0)
        assert later.new_version == 1
        names = [s.event.name async for s in hasty.read_all()]  # type: ignore[attr-defined]
        assert names == ["first", "later"]
    finally:
        other.close()
        await patient.close()
        await hasty.close()


def test_a_forked_child_does_not_inherit_a_held_file_lock(tmp_path: Path) -> None:
    """A writer thread of the parent holding a file's lock at a fork is not in the child:
    the child's writers of that file must not wait for it."""
    import os

    from eventsource._internal.sqlite import file_lock

    path = str(tmp_path / "forked.db")
    lock = file_lock(path)
    assert lock is not None
    lock.acquire(1.0)
    try:
        pid = os.fork()
        if pid == 0:  # the child: exit 0 if it can take the file's lock at once
            code = 1
            try:
                mine = file_lock(path)
                if mine is not None:
                    mine.acquire(0.0)
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        lock.release()
