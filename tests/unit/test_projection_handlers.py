"""EventHandlerBase and CheckpointTrackingProjection, fed directly (no subscription)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from eventsource import DomainEvent, EventRegistry, Position, StoredEvent
from eventsource.projections import CheckpointTrackingProjection, EventHandlerBase, handles
from eventsource.repositories import (
    DeadLetterStatus,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
)

registry = EventRegistry()


class Opened(DomainEvent, registry=registry):
    owner: str


class Closed(DomainEvent, registry=registry):
    pass


def stored(event: DomainEvent, sequence: int) -> StoredEvent:
    return StoredEvent(event, Position(0, sequence), datetime.now(UTC))


async def test_event_handler_base_dispatches_sync_and_async_methods() -> None:
    seen: list[str] = []

    class Audit(EventHandlerBase):
        @handles(Opened)
        def _opened(self, event: Opened) -> None:
            seen.append(f"opened by {event.owner}")

        @handles(Closed)
        async def _closed(self, event: Closed) -> None:
            seen.append("closed")

    audit = Audit()
    assert Audit.handled_types() == frozenset({"Opened", "Closed"})
    await audit.handle(Opened(owner="ada"))
    await audit.handle(Closed())

    class Other(DomainEvent, registry=registry):
        pass

    assert not audit.can_handle(Other())
    await audit.handle(Other())  # ignored
    assert seen == ["opened by ada", "closed"]


class Owners(CheckpointTrackingProjection):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.owners: list[str] = []
        self.fail_on: set[str] = set()

    @handles(Opened)
    def _opened(self, event: Opened) -> None:
        if event.owner in self.fail_on:
            raise RuntimeError(f"cannot record {event.owner}")
        self.owners.append(event.owner)


async def test_checkpoint_tracking_skips_redeliveries_and_moves_on() -> None:
    checkpoints = InMemoryCheckpointRepository()
    owners = Owners(checkpoints, retry_base=0.001, retry_cap=0.002)
    first, second = stored(Opened(owner="ada"), 1), stored(Opened(owner="bob"), 2)
    await owners.handle(first)
    await owners.handle(second)
    await owners.handle(first)  # redelivered: skipped
    assert owners.owners == ["ada", "bob"]
    checkpoint = await checkpoints.get("Owners")
    assert checkpoint is not None
    assert checkpoint.position == Position(0, 2)


async def test_checkpoint_tracking_retries_then_dead_letters() -> None:
    dead_letters = InMemoryDLQRepository()
    owners = Owners(InMemoryCheckpointRepository(), dead_letters, max_attempts=2, retry_base=0.001)
    owners.fail_on = {"eve"}
    await owners.handle(stored(Opened(owner="eve"), 1))
    await owners.handle(stored(Opened(owner="fay"), 2))
    assert owners.owners == ["fay"]
    (letter,) = await dead_letters.list("Owners")
    assert (letter.attempts, letter.status) == (2, DeadLetterStatus.FAILED)

    strict = Owners(InMemoryCheckpointRepository(), max_attempts=1)
    strict.fail_on = {"eve"}
    with pytest.raises(RuntimeError, match="cannot record eve"):
        await strict.handle(stored(Opened(owner="eve"), 1))
    assert await strict.checkpoints.get("Owners") is None  # not moved past a failure
    with pytest.raises(ValueError, match="max_attempts"):
        Owners(InMemoryCheckpointRepository(), max_attempts=0)
