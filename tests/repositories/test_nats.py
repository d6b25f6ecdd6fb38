"""`NATSCheckpointRepository` runs the checkpoint contract unchanged, each test on a bucket
of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventsource.repositories import CheckpointRepository
from eventsource.testing import CheckpointRepositoryContract
from tests._nats import delete_streams, unique_name

pytestmark = pytest.mark.nats


class TestNATSCheckpointRepository(CheckpointRepositoryContract):
    @pytest.fixture(autouse=True)
    async def _bucket(self, nats_url: str) -> AsyncIterator[None]:
        self.url = nats_url
        self.buckets: list[str] = []
        yield
        await delete_streams(nats_url, *(f"KV_{bucket}" for bucket in self.buckets))

    async def create_repository(self) -> CheckpointRepository:
        from eventsource import NATSCheckpointRepository

        bucket = unique_name("ckpt")
        self.buckets.append(bucket)
        return NATSCheckpointRepository(self.url, bucket=bucket)
