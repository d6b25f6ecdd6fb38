"""`AggregateCache`: recently used aggregate states, so hot aggregates skip replaying."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from uuid import UUID

__all__ = ["AggregateCache", "CachedState"]


@dataclass(frozen=True, slots=True)
class CachedState:
    version: int
    schema_version: int
    state: str
    """The state model as JSON text: every load gets its own copy of the state."""


class AggregateCache:
    """A bounded LRU map of aggregate id -> state at a version, shared by repositories.

    An entry is never trusted on its own: a repository reads the stream's events after the
    entry's version on every load (one query, usually empty) and applies them, so an entry
    left behind by appends of another process is brought up to date, never served stale.
    """

    def __init__(self, max_size: int = 1000) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self._entries: OrderedDict[tuple[str, UUID], CachedState] = OrderedDict()

    def get(self, aggregate_type: str, aggregate_id: UUID) -> CachedState | None:
        key = (aggregate_type, aggregate_id)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, aggregate_type: str, aggregate_id: UUID, entry: CachedState) -> None:
        """Keep `entry` unless a newer one of the same schema is cached already."""
        key = (aggregate_type, aggregate_id)
        kept = self._entries.get(key)
        if (
            kept is not None
            and kept.schema_version == entry.schema_version
            and kept.version > entry.version
        ):
            self._entries.move_to_end(key)
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def discard(self, aggregate_type: str, aggregate_id: UUID) -> None:
        self._entries.pop((aggregate_type, aggregate_id), None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
