"""When a repository takes snapshots: `SnapshotPolicy`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SnapshotPolicy"]


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """`every(n)`: after a save that crosses a multiple of `n` events; `manual()`: only when
    `AggregateRepository.snapshot` is called; `never()`: snapshots are neither taken nor read.
    """

    every_events: int | None = None
    use_snapshots: bool = True

    @classmethod
    def every(cls, events: int) -> SnapshotPolicy:
        if events < 1:
            raise ValueError(f"a snapshot every {events} events is not a policy; use >= 1")
        return cls(every_events=events)

    @classmethod
    def manual(cls) -> SnapshotPolicy:
        return cls()

    @classmethod
    def never(cls) -> SnapshotPolicy:
        return cls(use_snapshots=False)

    def due(self, previous_version: int, new_version: int) -> bool:
        """Whether a save that moved the stream from `previous_version` calls for one."""
        n = self.every_events
        return n is not None and new_version // n > previous_version // n
