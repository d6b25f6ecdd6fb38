"""The `SnapshotStore` contract and the `Snapshot` value type."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from eventsource._internal.clock import utc_now
from eventsource._internal.closing import AsyncClosing
from eventsource.exceptions import InvalidEventError

__all__ = ["Snapshot", "SnapshotStore"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state at one version of its stream, in the state model's JSON form.

    `schema_version` is the aggregate class's `schema_version` when the snapshot was taken: a
    reader of another schema version ignores the snapshot and replays the stream instead.
    """

    aggregate_id: UUID
    aggregate_type: str
    version: int
    schema_version: int
    state: str
    """JSON text of the state model (`state.model_dump_json()`)."""
    created_at: datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if self.version < 1:
            raise InvalidEventError(f"a snapshot needs a version >= 1, got {self.version}")
        if self.schema_version < 1:
            raise InvalidEventError(
                f"a snapshot needs a schema_version >= 1, got {self.schema_version}"
            )


class SnapshotStore(AsyncClosing, ABC):
    """Keeps the newest snapshot of each aggregate.

    Every backend passes `eventsource.testing.SnapshotStoreContract`. Snapshots are a cache:
    losing one costs a replay, never data, so stores may drop them at will.
    """

    @abstractmethod
    async def save(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` as the aggregate's snapshot, unless the one kept is newer.

        A snapshot of an older version never replaces a newer one of the same schema version
        (a slow background writer cannot roll a snapshot back); one of another schema version
        always replaces it.
        """

    @abstractmethod
    async def get(self, aggregate_id: UUID, aggregate_type: str | None = None) -> Snapshot | None:
        """The aggregate's snapshot (of that aggregate type, when given), or None."""

    @abstractmethod
    async def delete(self, aggregate_id: UUID) -> bool:
        """Forget the aggregate's snapshot; True if there was one."""

    @abstractmethod
    async def invalidate(
        self, aggregate_type: str, *, schema_version_below: int | None = None
    ) -> int:
        """Forget every snapshot of `aggregate_type` (only those with a schema version below
        `schema_version_below`, when given). Returns how many were forgotten."""
