"""`CheckpointRepositoryContract`: the behaviour every `CheckpointRepository` backend must have.

A backend's test module subclasses it and supplies an empty repository::

    class TestMyCheckpoints(CheckpointRepositoryContract):
        async def create_repository(self) -> CheckpointRepository:
            return MyCheckpointRepository(...)
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from eventsource.repositories.interface import CheckpointRepository
from eventsource.stores.interface import Position

__all__ = ["CheckpointRepositoryContract"]

_FAR = Position(2**40 + 7, 2**33 + 3)
"""Beyond 32 bits in both parts, as PostgreSQL transaction ids get."""


class CheckpointRepositoryContract(ABC):
    """Abstract pytest suite; subclasses implement `create_repository`."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_repository(self) -> CheckpointRepository:
        """A new, empty checkpoint repository."""

    @pytest.fixture
    async def checkpoints(self) -> AsyncIterator[CheckpointRepository]:
        repository = await self.create_repository()
        try:
            yield repository
        finally:
            await repository.close()

    async def test_unknown_name_has_no_checkpoint(self, checkpoints: CheckpointRepository) -> None:
        assert await checkpoints.get("never-saved") is None
        assert await checkpoints.list() == []

    async def test_save_keeps_every_field(self, checkpoints: CheckpointRepository) -> None:
        event_id = uuid4()
        before = datetime.now(UTC)
        await checkpoints.save(
            "orders", _FAR, event_id=event_id, event_type="ItemAdded", processed=5
        )
        after = datetime.now(UTC)
        kept = await checkpoints.get("orders")
        assert kept is not None
        assert (kept.name, kept.position, kept.event_id, kept.event_type) == (
            "orders",
            _FAR,
            event_id,
            "ItemAdded",
        )
        assert kept.events_processed == 5
        assert kept.updated_at.tzinfo is not None
        assert before <= kept.updated_at <= after

    async def test_package_guide_reads_of_a_saved_checkpoint(
        self, checkpoints: CheckpointRepository
    ) -> None:
        assert await checkpoints.get_checkpoint("orders") is None
        assert await checkpoints.get_lag_metrics("orders") is None  # nothing saved: no lag
        event_id = uuid4()
        await checkpoints.save("orders", _FAR, event_id=event_id, event_type="ItemAdded")
        assert await checkpoints.get_checkpoint("orders") == event_id
        (data,) = await checkpoints.get_all_checkpoints()
        assert (data.projection_name, data.last_event_id, data.last_event_type) == (
            "orders",
            event_id,
            "ItemAdded",
        )
        assert (data.global_position, data.events_processed) == (_FAR, 1)

    async def test_event_details_are_optional(self, checkpoints: CheckpointRepository) -> None:
        await checkpoints.save("bare", Position(0, 1))
        kept = await checkpoints.get("bare")
        assert kept is not None
        assert (kept.position, kept.event_id, kept.event_type, kept.events_processed) == (
            Position(0, 1),
            None,
            None,
            1,
        )

    async def test_save_moves_forward_and_adds_to_the_count(
        self, checkpoints: CheckpointRepository
    ) -> None:
        first, second = uuid4(), uuid4()
        await checkpoints.save("orders", Position(1, 5), processed=2)
        await checkpoints.save("orders", Position(1, 6), event_id=first, processed=3)
        before = datetime.now(UTC)
        # A later commit with a lower sequence is further: commit orders before sequence.
        await checkpoints.save(
            "orders", Position(2, 0), event_id=second, event_type="CartCheckedOut", processed=4
        )
        kept = await checkpoints.get("orders")
        assert kept is not None
        assert (kept.position, kept.event_id, kept.event_type, kept.events_processed) == (
            Position(2, 0),
            second,
            "CartCheckedOut",
            9,
        )
        assert kept.updated_at >= before

    async def test_save_at_or_before_the_saved_position_changes_nothing(
        self, checkpoints: CheckpointRepository
    ) -> None:
        await checkpoints.save(
            "orders", Position(5, 5), event_id=uuid4(), event_type="ItemAdded", processed=3
        )
        saved = await checkpoints.get("orders")
        for stale in (Position(5, 5), Position(5, 4), Position(4, 99), Position(0, 0)):
            await checkpoints.save("orders", stale, event_id=uuid4(), event_type="Old", processed=9)
        assert await checkpoints.get("orders") == saved

    async def test_concurrent_saves_keep_the_furthest_position(
        self, checkpoints: CheckpointRepository
    ) -> None:
        positions = [Position(commit, sequence) for commit in (1, 2, 3) for sequence in range(10)]
        event_ids = {position: uuid4() for position in positions}
        random.Random(3).shuffle(positions)
        await asyncio.gather(
            *(
                checkpoints.save("race", p, event_id=event_ids[p], event_type=str(p))
                for p in positions
            )
        )
        furthest = max(positions)
        kept = await checkpoints.get("race")
        assert kept is not None
        assert (kept.position, kept.event_id, kept.event_type) == (
            furthest,
            event_ids[furthest],
            str(furthest),
        )
        # How many saves were applied depends on the interleaving; the count is theirs only.
        assert 1 <= kept.events_processed <= len(positions)

    async def test_concurrent_saves_of_one_position_count_once(
        self, checkpoints: CheckpointRepository
    ) -> None:
        await asyncio.gather(*(checkpoints.save("same", Position(3, 3)) for _ in range(30)))
        kept = await checkpoints.get("same")
        assert kept is not None
        assert (kept.position, kept.events_processed) == (Position(3, 3), 1)

    async def test_names_are_independent(self, checkpoints: CheckpointRepository) -> None:
        await checkpoints.save("ahead", Position(9, 9), processed=4)
        await checkpoints.save("behind", Position(1, 1), processed=2)
        ahead, behind = await checkpoints.get("ahead"), await checkpoints.get("behind")
        assert ahead is not None
        assert behind is not None
        assert (ahead.position, ahead.events_processed) == (Position(9, 9), 4)
        assert (behind.position, behind.events_processed) == (Position(1, 1), 2)

    async def test_reset_to_a_position_rewinds_and_restarts_the_count(
        self, checkpoints: CheckpointRepository
    ) -> None:
        await checkpoints.save(
            "orders", Position(8, 2), event_id=uuid4(), event_type="ItemAdded", processed=10
        )
        before = datetime.now(UTC)
        await checkpoints.reset("orders", Position(3, 1))
        kept = await checkpoints.get("orders")
        assert kept is not None
        assert (kept.position, kept.event_id, kept.event_type, kept.events_processed) == (
            Position(3, 1),
            None,
            None,
            0,
        )
        assert kept.updated_at >= before
        await checkpoints.save("orders", Position(3, 1), processed=5)  # not after the reset
        await checkpoints.save("orders", Position(3, 2), processed=2)
        kept = await checkpoints.get("orders")
        assert kept is not None
        assert (kept.position, kept.events_processed) == (Position(3, 2), 2)

    async def test_reset_of_an_unknown_name_creates_its_checkpoint(
        self, checkpoints: CheckpointRepository
    ) -> None:
        await checkpoints.reset("new", Position(4, 0))
        kept = await checkpoints.get("new")
        assert kept is not None
        assert (kept.name, kept.position, kept.events_processed) == ("new", Position(4, 0), 0)

    async def test_reset_to_nothing_forgets_the_checkpoint(
        self, checkpoints: CheckpointRepository
    ) -> None:
        await checkpoints.save("orders", Position(7, 7), processed=3)
        await checkpoints.save("billing", Position(7, 7))
        await checkpoints.reset("orders")
        await checkpoints.reset("never-saved")
        assert await checkpoints.get("orders") is None
        assert [c.name for c in await checkpoints.list()] == ["billing"]
        await checkpoints.save("orders", Position(0, 1))  # from the beginning again
        kept = await checkpoints.get("orders")
        assert kept is not None
        assert (kept.position, kept.events_processed) == (Position(0, 1), 1)

    async def test_list_is_sorted_by_name(self, checkpoints: CheckpointRepository) -> None:
        names = ["orders", "Orders", "b", "a-2", "a_1", "Zoë", "zz", 'it\'s "quoted"', "x" * 200]
        for n, name in enumerate(random.Random(5).sample(names, len(names)), start=1):
            await checkpoints.save(name, Position(n, n), processed=n)
        listed = await checkpoints.list()
        assert [c.name for c in listed] == sorted(names)
        assert listed == [await checkpoints.get(name) for name in sorted(names)]
