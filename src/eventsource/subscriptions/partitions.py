"""Partitions: one subscription's work split by aggregate id, spread over processes.

Partition p of n handles the events of the aggregates with `aggregate_id.int % n == p`, in
feed order, so each aggregate's events keep their order while different aggregates are
handled in parallel. Each partition is a subscription of its own (own checkpoint, own lease);
a process takes up to `per_process` partitions at once and takes more only when they have
been free for `takeover_after` seconds (their holder is gone, or there are too few
processes), so partitions spread over the processes that run and move when one dies.

A partition reads only its own events: it passes `ReadOptions.partition` to a store that
filters partitions in its query (`EventStore.filters_partitions`: PostgreSQL and SQLite in
SQL, the in-memory store in Python), so the partitions together read the feed once. The
assignment is `aggregate_id.int % n` everywhere, stable across releases (each partition's
checkpoint depends on it); `in_partition` is the same rule in Python, for a store that does
not filter and for the dead-letter retries' admission check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

from eventsource.exceptions import EventTypeNotFoundError, SerializationError
from eventsource.stores.interface import StoredEvent
from eventsource.subscriptions.interface import Lease, LeaseProvider

__all__ = ["PartitionBudget", "in_partition", "partition_name", "partition_of"]


def partition_of(aggregate_id: UUID, partitions: int) -> int:
    """The partition of an aggregate: stable across processes and releases."""
    return aggregate_id.int % partitions


def partition_name(name: str, partition: int, partitions: int) -> str:
    return f"{name}.p{partition}of{partitions}"


def in_partition(partition: int, partitions: int) -> Callable[[StoredEvent], bool]:
    """Whether an event belongs to `partition` (a subscription's `only` filter: on a store
    that does not filter partitions, the others count as processed without reaching the
    handler)."""

    def belongs(stored: StoredEvent) -> bool:
        try:
            return stored.aggregate_id.int % partitions == partition
        except (EventTypeNotFoundError, SerializationError):
            # An undecodable row whose aggregate id only its payload could tell: partition 0
            # takes it (and parks it), so exactly one partition handles it.
            return partition == 0

    return belongs


class _CountedLease:
    def __init__(self, lease: Lease, budget: PartitionBudget) -> None:
        self._lease = lease
        self._budget = budget
        self._counted = True

    async def alive(self) -> bool:
        return await self._lease.alive()

    async def release(self) -> None:
        if self._counted:
            self._counted = False
            self._budget.held -= 1
        await self._lease.release()


class PartitionBudget:
    """Leases for the partitions of one subscription in this process: up to `per_process`
    at once, more only for partitions free for `takeover_after` seconds."""

    def __init__(self, leases: LeaseProvider, per_process: int, takeover_after: float) -> None:
        if per_process < 1:
            raise ValueError(f"per_process must be >= 1, got {per_process}")
        self._leases = leases
        self.per_process = per_process
        self.takeover_after = takeover_after
        self.held = 0
        self._free_since: dict[str, float] = {}

    async def try_acquire(self, name: str) -> Lease | None:
        lease = await self._leases.try_acquire(name)
        if lease is None:
            self._free_since.pop(name, None)  # someone runs it
            return None
        if self.held >= self.per_process:
            first_seen = self._free_since.setdefault(name, time.monotonic())
            if time.monotonic() - first_seen < self.takeover_after:
                await lease.release()  # leave it to a process with room, for now
                return None
        self._free_since.pop(name, None)
        self.held += 1
        return _CountedLease(lease, self)
