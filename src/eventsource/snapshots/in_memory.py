"""`InMemorySnapshotStore`: the snapshot contract in process memory."""

from __future__ import annotations

from uuid import UUID

from eventsource.snapshots.interface import Snapshot, SnapshotStore

__all__ = ["InMemorySnapshotStore"]


def replaces(new: Snapshot, kept: Snapshot | None) -> bool:
    """Whether `new` should replace `kept` (the rule every backend implements)."""
    return kept is None or new.schema_version != kept.schema_version or new.version >= kept.version


class InMemorySnapshotStore(SnapshotStore):
    """Snapshots in a dict: for tests and single-process tools (nothing persists)."""

    def __init__(self) -> None:
        self._snapshots: dict[UUID, Snapshot] = {}

    async def save(self, snapshot: Snapshot) -> None:
        if replaces(snapshot, self._snapshots.get(snapshot.aggregate_id)):
            self._snapshots[snapshot.aggregate_id] = snapshot

    async def get(self, aggregate_id: UUID, aggregate_type: str | None = None) -> Snapshot | None:
        snapshot = self._snapshots.get(aggregate_id)
        if snapshot is None or (aggregate_type and snapshot.aggregate_type != aggregate_type):
            return None
        return snapshot

    async def delete(self, aggregate_id: UUID) -> bool:
        return self._snapshots.pop(aggregate_id, None) is not None

    async def invalidate(
        self, aggregate_type: str, *, schema_version_below: int | None = None
    ) -> int:
        doomed = [
            key
            for key, snapshot in self._snapshots.items()
            if snapshot.aggregate_type == aggregate_type
            and (schema_version_below is None or snapshot.schema_version < schema_version_below)
        ]
        for key in doomed:
            del self._snapshots[key]
        return len(doomed)
