"""`StoreMigration`: copy one event store into another while the source stays live.

The copier tails the SOURCE's global feed (`read_all`, optionally one tenant's events) from a
durable migration checkpoint and appends each event to the TARGET at its own stream version.
Everything goes through the public `EventStore` interface, so any two backends work.

Why this is safe to interrupt anywhere (a SIGKILL included):

- Each page of the feed is cut into runs of consecutive events of one stream, and each run is
  ONE append with `expected_version = first version - 1`: the target stream gets exactly the
  source's versions, or the append fails.
- The checkpoint (the last source position copied, in a `CheckpointRepository`, usually the
  target database's) is saved only after the page's appends succeeded. A crash between the two
  makes the next run copy the page again. An append of events the target already holds either
  returns the original result (stores are idempotent by event id) or fails on the version
  check; the copier then reads the target stream's version, checks that the events it holds at
  those versions have the same ids (else `MigrationConflictError`: nothing is overwritten) and
  appends only the rest. So resuming never duplicates and never skips.
- One copier appends in source feed order, so the target's feed holds the copied events in
  the source's order. That is what maps a subscription's checkpoint: source position P maps to
  the target position of the last source event at or before P (found by event id, which the
  copy keeps), and a subscription resumed there on the target sees exactly the events it had
  not yet seen on the source.

Why no dual-write wrapper: an application writing to both stores would put its events into
the target's feed ahead of older events the copier has not reached yet, so the target's order
would no longer follow the source's and checkpoints could not be mapped exactly. The tailing
copier gives the same catch-up (lag is seconds when it follows the feed) without that cost;
cutover is: stop writers, drain (`copy` until caught up), verify, switch (docs/migration.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from eventsource.exceptions import (
    EventIdConflictError,
    EventNotFoundError,
    MigrationConflictError,
    MigrationError,
    OptimisticLockError,
)
from eventsource.migration._rows import CopiedEvent, copied_event, event_id_of, row_data
from eventsource.migration.verify import VerificationReport, compare
from eventsource.repositories.interface import CheckpointRepository
from eventsource.stores.interface import (
    EventStore,
    Position,
    ReadDirection,
    ReadOptions,
    StoredEvent,
)

__all__ = ["CopyProgress", "MappedCheckpoint", "MigrationStatus", "StoreMigration"]

CHECKPOINT_PREFIX = "eventsource-migration:"
"""Checkpoint names of migrations (skipped when subscriptions' checkpoints are mapped)."""


@dataclass(frozen=True, slots=True)
class CopyProgress:
    """Where a running copy stands, handed to `copy(on_progress=...)` after each page."""

    copied: int
    """Events copied by this call so far."""
    remaining: int
    """Source events not copied yet (counted when the copy started, then estimated)."""
    position: Position
    """The last source position copied."""
    elapsed: float
    """Seconds since this call started."""

    @property
    def rate(self) -> float:
        """Events per second so far."""
        return self.copied / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None before the first page)."""
        rate = self.rate
        return self.remaining / rate if rate > 0 else None


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """Sync lag: how far the copy is behind the source's head."""

    position: Position | None
    """The last source position copied (None: the copy has not started)."""
    copied: int
    """Events copied so far, over every run of the copier."""
    behind: int
    """Source events not copied yet."""
    behind_seconds: float
    """Age of the oldest event not copied yet (0 when caught up)."""
    source_head: Position


@dataclass(frozen=True, slots=True)
class MappedCheckpoint:
    name: str
    source_position: Position
    target_position: Position


class StoreMigration:
    """Copy `source` into `target` (optionally only `tenant_id`'s events), resumably.

    `state` keeps the migration checkpoint under `eventsource-migration:<name>`; give each
    concurrent migration (say, one per tenant) its own name. `batch_size` is how many
    source events one page (and at most one checkpoint save) covers.
    """

    def __init__(
        self,
        source: EventStore,
        target: EventStore,
        *,
        state: CheckpointRepository,
        name: str | None = None,
        tenant_id: UUID | None = None,
        batch_size: int = 500,
    ) -> None:
        if batch_size < 1:
            raise MigrationError(f"batch_size must be >= 1, got {batch_size}")
        self.source = source
        self.target = target
        self.state = state
        self.tenant_id = tenant_id
        self.batch_size = batch_size
        if name is None:
            name = "default" if tenant_id is None else f"tenant-{tenant_id}"
        self.checkpoint_name = CHECKPOINT_PREFIX + name

    def _options(
        self,
        *,
        after: Position | None = None,
        limit: int | None = None,
        direction: ReadDirection = ReadDirection.FORWARD,
    ) -> ReadOptions:
        return ReadOptions(
            tenant_id=self.tenant_id,
            batch_size=self.batch_size,
            after=after,
            limit=limit,
            direction=direction,
        )

    async def position(self) -> Position | None:
        """The last source position copied, or None before the first page."""
        checkpoint = await self.state.get(self.checkpoint_name)
        return None if checkpoint is None else checkpoint.position

    async def copy(
        self,
        *,
        follow: bool = False,
        poll_interval: float = 0.5,
        stop: asyncio.Event | None = None,
        on_progress: Callable[[CopyProgress], object] | None = None,
    ) -> int:
        """Copy what the source holds beyond the checkpoint; returns the number copied.

        Without `follow` it returns once it has copied the source's head as of the call
        (so it ends even while writers keep appending). With `follow` it keeps tailing the
        feed (woken by the source's append signals, polling every `poll_interval` seconds)
        until `stop` is set.
        """
        after = await self.position()
        head = await self.source.current_position()
        remaining = await self.source.count_events(self._options(after=after))
        started = time.monotonic()
        copied = 0
        async with self.source.listen() as signal:
            while stop is None or not stop.is_set():
                page = [
                    stored
                    async for stored in self.source.read_all(
                        self._options(after=after, limit=self.batch_size)
                    )
                ]
                if page:
                    copied += await self._copy_and_save(page)
                    after = page[-1].position
                    remaining = max(remaining - len(page), 0)
                    if on_progress is not None:
                        elapsed = time.monotonic() - started
                        on_progress(CopyProgress(copied, remaining, after, elapsed))
                if not follow and (not page or page[-1].position >= head):
                    break
                if not page:
                    await _wait(signal.wait(), stop, poll_interval)
        return copied

    async def _copy_and_save(self, page: Sequence[StoredEvent]) -> int:
        """Append a page to the target, then move the checkpoint past it."""
        await self._copy_page(page)
        await self.state.save(self.checkpoint_name, page[-1].position, processed=len(page))
        return len(page)

    async def _copy_page(self, page: Sequence[StoredEvent]) -> None:
        run: list[StoredEvent] = []
        run_data: list[dict[str, object]] = []
        for stored in page:
            data = row_data(stored)
            if run and data["aggregate_id"] != run_data[0]["aggregate_id"]:
                await self._append_run(run, run_data)
                run, run_data = [], []
            run.append(stored)
            run_data.append(data)
        if run:
            await self._append_run(run, run_data)

    async def _append_run(
        self, run: Sequence[StoredEvent], run_data: Sequence[dict[str, object]]
    ) -> None:
        events = [copied_event(data, stored) for data, stored in zip(run_data, run, strict=True)]
        first = events[0]
        try:
            await self.target.append_events(
                first.aggregate_id, first.aggregate_type, events, first.aggregate_version - 1
            )
        except (OptimisticLockError, EventIdConflictError):
            await self._reconcile(events)

    async def _reconcile(self, events: Sequence[CopiedEvent]) -> None:
        """Append the part of a run the target does not hold yet (after a crash between an
        append and its checkpoint): the part it holds must be these very events."""
        first = events[0]
        stream = first.aggregate_id
        current = await self.target.get_stream_version(stream)
        if current < first.aggregate_version - 1:
            raise MigrationConflictError(
                stream,
                f"the target stream is at version {current}, but the copy reached version "
                f"{first.aggregate_version - 1} (events are missing from the target)",
            )
        held = [event for event in events if event.aggregate_version <= current]
        if held:
            options = ReadOptions(
                from_version=first.aggregate_version, to_version=held[-1].aggregate_version
            )
            ids = [event_id_of(s) async for s in self.target.read_stream(stream, options)]
            if ids != [event.event_id for event in held]:
                raise MigrationConflictError(
                    stream,
                    f"versions {first.aggregate_version}-{held[-1].aggregate_version} hold "
                    "other event ids on the target",
                )
        rest = list(events[len(held) :])
        if rest:
            await self.target.append_events(stream, first.aggregate_type, rest, current)

    async def status(self) -> MigrationStatus:
        """Sync lag: events and seconds between the copy and the source's head."""
        checkpoint = await self.state.get(self.checkpoint_name)
        after = None if checkpoint is None else checkpoint.position
        behind = await self.source.count_events(self._options(after=after))
        seconds = 0.0
        if behind:
            async for oldest in self.source.read_all(self._options(after=after, limit=1)):
                seconds = max((datetime.now(UTC) - oldest.recorded_at).total_seconds(), 0.0)
        return MigrationStatus(
            position=after,
            copied=0 if checkpoint is None else checkpoint.events_processed,
            behind=behind,
            behind_seconds=seconds,
            source_head=await self.source.current_position(),
        )

    async def verify(self) -> VerificationReport:
        """Compare the source, up to the copied position, with the target, stream by
        stream (counts, version order, checksums); `report.ok` when they match."""
        until = await self.position()
        return await compare(
            self.source,
            self.target,
            tenant_id=self.tenant_id,
            until=until if until is not None else Position.START,
        )

    async def map_position(self, position: Position) -> Position:
        """The target position a reader at source `position` resumes after: the target
        position of the last copied source event at or before it (`Position.START` when
        there is none). `MigrationError` when that event is not copied yet."""
        if position == Position.START:
            return Position.START
        options = self._options(
            direction=ReadDirection.BACKWARD,
            after=Position(position.commit, position.sequence + 1),
            limit=1,
        )
        last = [stored async for stored in self.source.read_all(options)]
        if not last:
            return Position.START
        event_id = event_id_of(last[0])
        try:
            return (await self.target.get_event(event_id)).position
        except EventNotFoundError:
            raise MigrationError(
                f"source position {position} lies beyond what was copied (event {event_id} "
                f"at {last[0].position} is not in the target yet): run the copy until it "
                "catches up, then map again"
            ) from None

    async def map_checkpoints(
        self,
        checkpoints: CheckpointRepository,
        into: CheckpointRepository,
        *,
        names: Sequence[str] | None = None,
    ) -> list[MappedCheckpoint]:
        """Translate subscriptions' checkpoints of the source (`checkpoints`) into
        checkpoints for the target (`into`, set with `reset`). Every checkpoint except the
        migrations' own, or only `names`. Map after the subscriptions stopped on the source."""
        mapped: list[MappedCheckpoint] = []
        for checkpoint in await checkpoints.list():
            name = checkpoint.name
            if name.startswith(CHECKPOINT_PREFIX) or (names is not None and name not in names):
                continue
            target_position = await self.map_position(checkpoint.position)
            await into.reset(name, target_position)
            mapped.append(MappedCheckpoint(name, checkpoint.position, target_position))
        if names is not None:
            missing = sorted(set(names) - {m.name for m in mapped})
            if missing:
                raise MigrationError(f"no source checkpoint named {', '.join(missing)}")
        return mapped


async def _wait(
    waiting: Coroutine[object, object, None], stop: asyncio.Event | None, seconds: float
) -> None:
    """Wait for `waiting`, `stop` or `seconds`, whichever comes first."""
    tasks: set[asyncio.Future[object]] = {asyncio.ensure_future(waiting)}
    if stop is not None:
        tasks.add(asyncio.ensure_future(stop.wait()))
    _, pending = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
