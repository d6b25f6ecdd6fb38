"""`SyncAggregateRepository`: `AggregateRepository` as blocking methods for synchronous code.

The repository runs on the loop of a `SyncEventStoreAdapter`, the loop its event store's
connections belong to, so its reads, appends, retries, snapshots and single-flight loads work
exactly as they do for async callers; threads calling at once become concurrent commands.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload
from uuid import UUID

from eventsource.aggregates.base import AggregateRoot
from eventsource.aggregates.repository import AggregateRepository, RepositoryStats
from eventsource.stores.interface import AppendResult
from eventsource.sync.adapter import SyncEventStoreAdapter

__all__ = ["SyncAggregateRepository"]

TAggregate = TypeVar("TAggregate", bound=AggregateRoot)  # type: ignore[type-arg]
R = TypeVar("R")


class SyncAggregateRepository(Generic[TAggregate]):
    """Load, save and run commands on aggregates from synchronous code.

    Build the `AggregateRepository` on the adapter's store (`adapter.store`) and hand both
    over; from then on use the repository, and any snapshot store or publisher it holds, only
    through this facade, so everything runs on the adapter's loop. `close()` waits for
    background snapshot writes; it leaves the adapter open (it is shared), close that too.
    """

    def __init__(
        self, adapter: SyncEventStoreAdapter[Any], repository: AggregateRepository[TAggregate]
    ) -> None:
        self.adapter = adapter
        self.repository = repository

    @property
    def aggregate_type(self) -> str:
        return self.repository.aggregate_type

    @property
    def stats(self) -> RepositoryStats:
        return self.repository.stats

    def create_new(self, aggregate_id: UUID) -> TAggregate:
        """A new, empty aggregate (nothing is stored until it is saved)."""
        return self.repository.create_new(aggregate_id)

    def load(self, aggregate_id: UUID) -> TAggregate:
        """The aggregate rebuilt from its events; `AggregateNotFoundError` if it has none."""
        return self.adapter.call(self.repository.load, aggregate_id)

    def load_or_create(self, aggregate_id: UUID) -> TAggregate:
        """The stored aggregate, or a new one when the stream has no events."""
        return self.adapter.call(self.repository.load_or_create, aggregate_id)

    def exists(self, aggregate_id: UUID) -> bool:
        return self.adapter.call(self.repository.exists, aggregate_id)

    def save(self, aggregate: TAggregate) -> AppendResult | None:
        """Append the aggregate's new events (`OptimisticLockError` when another writer got
        there first); None when there were none to save."""
        return self.adapter.call(self.repository.save, aggregate)

    def snapshot(self, aggregate: TAggregate) -> None:
        """Take a snapshot of a saved aggregate now (for `SnapshotPolicy.manual()`)."""
        self.adapter.call(self.repository.snapshot, aggregate)

    @overload
    def execute(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], Awaitable[R]],
        *,
        create: bool = False,
    ) -> R: ...

    @overload
    def execute(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], R],
        *,
        create: bool = False,
    ) -> R: ...

    def execute(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], Any],
        *,
        create: bool = False,
    ) -> Any:
        """Load, run `command(aggregate)`, save, retrying on a version conflict
        (`AggregateRepository.execute`); returns what the command returned.

        The command runs on the adapter's loop thread: keep it to deciding on the aggregate
        (it must not call blocking adapter methods, which raise `SyncAdapterError` there).
        """
        return self.adapter.call(self.repository.execute, aggregate_id, command, create=create)

    def close(self) -> None:
        """Wait for background snapshot writes (the adapter and its store stay open)."""
        self.adapter.call(self.repository.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
