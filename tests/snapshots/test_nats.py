"""`NATSSnapshotStore` runs the snapshot contract unchanged, each test on a bucket of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventsource.snapshots import SnapshotStore
from eventsource.testing import SnapshotStoreContract
from tests._nats import delete_streams, unique_name

pytestmark = pytest.mark.nats


class TestNATSSnapshotStore(SnapshotStoreContract):
    @pytest.fixture(autouse=True)
    async def _bucket(self, nats_url: str) -> AsyncIterator[None]:
        self.url = nats_url
        self.buckets: list[str] = []
        yield
        await delete_streams(nats_url, *(f"KV_{bucket}" for bucket in self.buckets))

    async def create_store(self) -> SnapshotStore:
        from eventsource import NATSSnapshotStore

        bucket = unique_name("snap")
        self.buckets.append(bucket)
        return NATSSnapshotStore(self.url, bucket=bucket)
