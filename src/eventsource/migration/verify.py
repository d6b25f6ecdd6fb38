"""Verification before cutover: per-stream counts and checksums on both sides.

Each side's feed is read once (one tenant's events when the migration has a tenant). Per
stream it keeps the number of events, whether the versions ran 1, 2, 3, ... in feed order,
and a SHA-256 over each event's canonical form (ids, type, schema version, stream version
and every field; see `_rows.canonical_text`), so a lost, duplicated, reordered or altered
event shows up as a difference. The source is read only up to the migration's checkpoint,
so a live source (writers still running) verifies against what was copied so far.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from uuid import UUID

from eventsource.migration._rows import canonical_text, row_data
from eventsource.stores.interface import EventStore, Position, ReadOptions

__all__ = ["StreamDifference", "StreamSummary", "VerificationReport", "summarize"]


@dataclass(slots=True)
class StreamSummary:
    """One stream as one side holds it."""

    count: int = 0
    last_version: int = 0
    in_order: bool = True
    """Versions ran 1, 2, 3, ... in feed order."""
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)

    def add(self, version: int, text: str) -> None:
        self.count += 1
        if version != self.last_version + 1:
            self.in_order = False
        self.last_version = version
        self._hash.update(text.encode())
        self._hash.update(b"\n")

    @property
    def checksum(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True, slots=True)
class StreamDifference:
    """A stream that differs; counts are 0 on the side that lacks it."""

    aggregate_id: UUID
    source_count: int
    target_count: int
    reason: str


@dataclass(frozen=True, slots=True)
class VerificationReport:
    source_events: int
    target_events: int
    streams: int
    differences: tuple[StreamDifference, ...]

    @property
    def ok(self) -> bool:
        return not self.differences and self.source_events == self.target_events


async def summarize(
    store: EventStore,
    *,
    tenant_id: UUID | None = None,
    until: Position | None = None,
    batch_size: int = 1000,
) -> dict[UUID, StreamSummary]:
    """Per-stream summaries of `store`'s feed (only `tenant_id`'s events; up to `until`)."""
    streams: dict[UUID, StreamSummary] = {}
    options = ReadOptions(tenant_id=tenant_id, batch_size=batch_size)
    async for stored in store.read_all(options):
        if until is not None and stored.position > until:
            break
        data = row_data(stored)
        stream = UUID(str(data["aggregate_id"]))
        summary = streams.get(stream)
        if summary is None:
            summary = streams[stream] = StreamSummary()
        summary.add(stored.version, canonical_text(data))
    return streams


async def compare(
    source: EventStore,
    target: EventStore,
    *,
    tenant_id: UUID | None = None,
    until: Position | None = None,
) -> VerificationReport:
    """Compare `source` (up to `until`) with `target`, stream by stream."""
    ours, theirs = await asyncio.gather(
        summarize(source, tenant_id=tenant_id, until=until),
        summarize(target, tenant_id=tenant_id),
    )
    differences: list[StreamDifference] = []
    for stream in sorted(ours.keys() | theirs.keys()):
        mine, copy = ours.get(stream), theirs.get(stream)
        source_count = mine.count if mine else 0
        target_count = copy.count if copy else 0
        if mine is None:
            reason = "only in the target"
        elif copy is None:
            reason = "missing from the target"
        elif not copy.in_order:
            reason = "versions out of order in the target feed"
        elif source_count != target_count:
            reason = "event counts differ"
        elif mine.checksum != copy.checksum:
            reason = "checksums differ (an event's content, id or order)"
        else:
            continue
        differences.append(StreamDifference(stream, source_count, target_count, reason))
    return VerificationReport(
        source_events=sum(s.count for s in ours.values()),
        target_events=sum(s.count for s in theirs.values()),
        streams=len(ours.keys() | theirs.keys()),
        differences=tuple(differences),
    )
