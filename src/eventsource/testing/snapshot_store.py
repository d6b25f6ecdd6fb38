"""`SnapshotStoreContract`: the behaviour every `SnapshotStore` backend must have.

A backend's test module subclasses it and supplies an empty store::

    class TestMySnapshots(SnapshotStoreContract):
        async def create_store(self) -> SnapshotStore:
            return MySnapshotStore(...)
"""

from __future__ import annotations

import asyncio
import json
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from eventsource.exceptions import InvalidEventError
from eventsource.snapshots.interface import Snapshot, SnapshotStore

__all__ = ["SnapshotStoreContract"]


def _snapshot(
    aggregate_id: UUID | None = None,
    *,
    version: int = 1,
    schema_version: int = 1,
    aggregate_type: str = "Account",
    balance: int = 0,
) -> Snapshot:
    return Snapshot(
        aggregate_id=aggregate_id or uuid4(),
        aggregate_type=aggregate_type,
        version=version,
        schema_version=schema_version,
        state=json.dumps({"balance": balance, "owner": 'Zoë "quoted" \\ name'}),
    )


class SnapshotStoreContract(ABC):
    """Abstract pytest suite; subclasses implement `create_store`."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_store(self) -> SnapshotStore:
        """A new, empty snapshot store."""

    @pytest.fixture
    async def snapshots(self) -> AsyncIterator[SnapshotStore]:
        store = await self.create_store()
        try:
            yield store
        finally:
            await store.close()

    async def test_missing_snapshot_is_none(self, snapshots: SnapshotStore) -> None:
        assert await snapshots.get(uuid4()) is None

    async def test_round_trip_keeps_every_field(self, snapshots: SnapshotStore) -> None:
        taken = _snapshot(version=42, schema_version=3, balance=7)
        await snapshots.save(taken)
        read = await snapshots.get(taken.aggregate_id)
        assert read is not None
        assert (read.aggregate_id, read.aggregate_type, read.version, read.schema_version) == (
            taken.aggregate_id,
            "Account",
            42,
            3,
        )
        assert json.loads(read.state) == json.loads(taken.state)
        assert read.created_at == taken.created_at
        assert read.created_at.tzinfo is not None

    async def test_aggregate_type_must_match_when_given(self, snapshots: SnapshotStore) -> None:
        taken = _snapshot()
        await snapshots.save(taken)
        assert await snapshots.get(taken.aggregate_id, "Account") is not None
        assert await snapshots.get(taken.aggregate_id, "Order") is None

    async def test_newer_version_replaces_older_never_the_reverse(
        self, snapshots: SnapshotStore
    ) -> None:
        account = uuid4()
        await snapshots.save(_snapshot(account, version=10, balance=10))
        await snapshots.save(_snapshot(account, version=20, balance=20))
        await snapshots.save(_snapshot(account, version=15, balance=15))  # a late writer
        kept = await snapshots.get(account)
        assert kept is not None
        assert (kept.version, json.loads(kept.state)["balance"]) == (20, 20)
        await snapshots.save(_snapshot(account, version=20, balance=21))  # same version: new
        kept = await snapshots.get(account)
        assert kept is not None
        assert json.loads(kept.state)["balance"] == 21

    async def test_another_schema_version_always_replaces(self, snapshots: SnapshotStore) -> None:
        account = uuid4()
        await snapshots.save(_snapshot(account, version=30, schema_version=1))
        await snapshots.save(_snapshot(account, version=5, schema_version=2))
        kept = await snapshots.get(account)
        assert kept is not None
        assert (kept.version, kept.schema_version) == (5, 2)

    async def test_concurrent_saves_keep_the_newest(self, snapshots: SnapshotStore) -> None:
        account = uuid4()
        versions = list(range(1, 41))
        random.Random(7).shuffle(versions)
        await asyncio.gather(
            *(snapshots.save(_snapshot(account, version=v, balance=v)) for v in versions)
        )
        kept = await snapshots.get(account)
        assert kept is not None
        assert (kept.version, json.loads(kept.state)["balance"]) == (40, 40)

    async def test_delete(self, snapshots: SnapshotStore) -> None:
        taken = _snapshot()
        other = _snapshot()
        await snapshots.save(taken)
        await snapshots.save(other)
        assert await snapshots.delete(taken.aggregate_id) is True
        assert await snapshots.delete(taken.aggregate_id) is False
        assert await snapshots.get(taken.aggregate_id) is None
        assert await snapshots.get(other.aggregate_id) is not None

    async def test_invalidate_by_type_and_schema_version(self, snapshots: SnapshotStore) -> None:
        old = [_snapshot(schema_version=1) for _ in range(3)]
        new = [_snapshot(schema_version=2) for _ in range(2)]
        orders = [_snapshot(aggregate_type="Order", schema_version=1) for _ in range(2)]
        for taken in [*old, *new, *orders]:
            await snapshots.save(taken)
        assert await snapshots.invalidate("Account", schema_version_below=2) == 3
        assert [await snapshots.get(s.aggregate_id) for s in old] == [None, None, None]
        assert all([await snapshots.get(s.aggregate_id) for s in [*new, *orders]])
        assert await snapshots.invalidate("Account") == 2
        assert await snapshots.invalidate("Account") == 0
        assert all([await snapshots.get(s.aggregate_id) for s in orders])

    async def test_snapshot_values_are_checked(self) -> None:
        with pytest.raises(InvalidEventError):
            Snapshot(uuid4(), "Account", 0, 1, "{}")
        with pytest.raises(InvalidEventError):
            Snapshot(uuid4(), "Account", 1, 0, "{}", datetime.now(UTC))
