"""`AggregateRepository`: load aggregates from their streams, save their new events.

Loading is the hot path of every command, so the repository can shorten it three ways, each
optional and each safe under concurrent writers:

* snapshots: start from the newest valid snapshot and replay only the events after it;
* a cache (`AggregateCache`): start from the state this process saw last, read what came
  after it (one query, usually empty), so an entry is never served stale;
* single-flight: concurrent loads of one aggregate share one read.

`serialize_commands=True` runs the commands for one aggregate one at a time in this process,
so a hot aggregate does not thrash on `OptimisticLockError` (other processes are still
stopped by optimistic concurrency).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload
from uuid import UUID

from pydantic import ValidationError

from eventsource._internal import telemetry
from eventsource._internal.closing import AsyncClosing, closing_iterator
from eventsource._internal.retry import backoff_delay
from eventsource.aggregates.base import AggregateRoot
from eventsource.aggregates.cache import AggregateCache, CachedState
from eventsource.aggregates.snapshots import SnapshotPolicy
from eventsource.events.base import DomainEvent
from eventsource.exceptions import AggregateNotFoundError, OptimisticLockError
from eventsource.snapshots.interface import Snapshot, SnapshotStore
from eventsource.stores.interface import (
    AppendResult,
    EventPublisher,
    EventStore,
    Position,
    ReadOptions,
)

__all__ = ["AggregateRepository", "CommandResult", "RepositoryStats"]

logger = logging.getLogger(__name__)

_UNFAITHFUL_STATES: set[type[Any]] = set()
"""State models already warned about (`AggregateRepository._state_text`)."""

TAggregate = TypeVar("TAggregate", bound=AggregateRoot)  # type: ignore[type-arg]
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class CommandResult(Generic[R]):
    """What `execute_command` did: the command's return value and what it appended.

    `position` is the consistency token for read-your-writes: a web handler returns it (as
    `str(position)`) and a later query waits for a subscription to reach it
    (`subscription.wait_for(Position.parse(token))`) before reading the read model.
    """

    value: R
    """What the command returned."""
    append: AppendResult | None
    """The append, or None when the command raised no event (nothing was written)."""
    version: int
    """The aggregate's version after the command."""

    @property
    def position(self) -> Position | None:
        """Position of the last event appended; None when nothing was appended."""
        return None if self.append is None else self.append.last_position


_BACKOFF_BASE = 0.001  # seconds; doubled per retry, full jitter
_BACKOFF_CAP = 0.1
_DEFAULT_SNAPSHOT_EVERY = 100


@dataclass(slots=True)
class RepositoryStats:
    """Counters of what a repository did, for metrics and tests."""

    loads: int = 0
    shared_loads: int = 0
    """Loads answered by another load of the same aggregate already in flight."""
    cache_hits: int = 0
    snapshot_loads: int = 0
    """Loads that started from a snapshot."""
    snapshots_ignored: int = 0
    """Snapshots of another schema version, or that failed to deserialize (full replay)."""
    snapshots_taken: int = 0
    snapshot_failures: int = 0
    """Snapshots that could not be written (the command still succeeded)."""
    events_replayed: int = 0


class _Flight:
    __slots__ = ("followers", "future")

    def __init__(self) -> None:
        self.future: asyncio.Future[tuple[int, str] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.followers = 0


class _KeyedLocks:
    """One asyncio.Lock per key while anyone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[UUID, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: UUID) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class AggregateRepository(AsyncClosing, Generic[TAggregate]):
    """Loads and saves one aggregate type through an `EventStore`.

    `save` appends the aggregate's new events expecting the version it was loaded at, so a
    concurrent change raises `OptimisticLockError` instead of being overwritten. `execute`
    runs a command and retries it on such a conflict. With an `event_publisher`, saved
    events are published after the append commits.

    With a `snapshot_store`, loads start from the aggregate's snapshot and snapshots are taken
    by `snapshot_policy` (default: every 100 events), after the save or, with
    `snapshot_in_background=True`, in a task that `close()` waits for. A failing snapshot write
    is logged and counted, never the command's error. See the module docstring for `cache`,
    `single_flight` and `serialize_commands`.
    """

    def __init__(
        self,
        event_store: EventStore,
        aggregate_factory: Callable[[UUID], TAggregate],
        aggregate_type: str | None = None,
        event_publisher: EventPublisher | None = None,
        *,
        max_retries: int = 10,
        snapshot_store: SnapshotStore | None = None,
        snapshot_policy: SnapshotPolicy | None = None,
        snapshot_in_background: bool = False,
        cache: AggregateCache | None = None,
        single_flight: bool = True,
        serialize_commands: bool = False,
    ) -> None:
        if aggregate_type is None:
            aggregate_type = getattr(aggregate_factory, "aggregate_type", None)
            if not isinstance(aggregate_type, str) or not aggregate_type:
                raise TypeError(
                    "aggregate_type is required when the factory is not an AggregateRoot class"
                )
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if snapshot_policy is not None and snapshot_store is None and snapshot_policy.use_snapshots:
            raise ValueError("a snapshot_policy needs a snapshot_store")
        self.event_store = event_store
        self.aggregate_factory = aggregate_factory
        self.aggregate_type = aggregate_type
        self.event_publisher = event_publisher
        self.max_retries = max_retries
        self.snapshot_store = snapshot_store
        self.snapshot_policy = snapshot_policy or (
            SnapshotPolicy.every(_DEFAULT_SNAPSHOT_EVERY)
            if snapshot_store is not None
            else SnapshotPolicy.never()
        )
        self.snapshot_in_background = snapshot_in_background
        self.cache = cache
        self.single_flight = single_flight
        self.serialize_commands = serialize_commands
        self.stats = RepositoryStats()
        self._flights: dict[Hashable, _Flight] = {}
        self._locks = _KeyedLocks()
        self._snapshot_tasks: set[asyncio.Task[None]] = set()

    def create_new(self, aggregate_id: UUID) -> TAggregate:
        """A new, empty aggregate (nothing is stored until it is saved)."""
        return self.aggregate_factory(aggregate_id)

    # -- loading -----------------------------------------------------------------------------

    async def load(self, aggregate_id: UUID) -> TAggregate:
        """The aggregate rebuilt from its events; `AggregateNotFoundError` if it has none."""
        aggregate = await self._load(aggregate_id)
        if aggregate.version == 0:
            raise AggregateNotFoundError(aggregate_id, self.aggregate_type)
        return aggregate

    async def load_or_create(self, aggregate_id: UUID) -> TAggregate:
        """The stored aggregate, or a new one when the stream has no events."""
        return await self._load(aggregate_id)

    async def _load(self, aggregate_id: UUID) -> TAggregate:
        with telemetry.operation(
            f"load {self.aggregate_type}", lambda: self._span_attributes(aggregate_id)
        ) as span:
            aggregate = await self._load_shared(aggregate_id)
            span.set(telemetry.VERSION, aggregate.version)
        return aggregate

    def _span_attributes(self, aggregate_id: UUID) -> dict[str, str]:
        return {
            telemetry.STREAM_ID: str(aggregate_id),
            telemetry.AGGREGATE_TYPE: self.aggregate_type,
        }

    async def _load_shared(self, aggregate_id: UUID) -> TAggregate:
        """Read the aggregate, or share the result of a load of it already reading."""
        self.stats.loads += 1
        await self._authorize(aggregate_id)
        if not self.single_flight:
            return await self._read(aggregate_id)
        key = self._flight_key(aggregate_id)
        flight = self._flights.get(key)
        if flight is not None:  # another load of this aggregate is reading: share its result
            flight.followers += 1
            base = await asyncio.shield(flight.future)
            if base is None:  # the leading load was cancelled: read for ourselves
                return await self._read(aggregate_id)
            self.stats.shared_loads += 1
            telemetry.annotate("eventsource.load.shared", True)
            aggregate = self.aggregate_factory(aggregate_id)
            aggregate.restore_snapshot(base[1], base[0])  # each caller gets its own copy
            return aggregate
        flight = self._flights[key] = _Flight()
        try:
            aggregate = await self._read(aggregate_id)
        except Exception as exc:
            if flight.followers:
                flight.future.set_exception(exc)
            raise
        except BaseException:
            if flight.followers:
                flight.future.set_result(None)
            raise
        finally:
            del self._flights[key]
        if flight.followers:
            flight.future.set_result((aggregate.version, aggregate.snapshot_state()))
        return aggregate

    async def _authorize(self, aggregate_id: UUID) -> None:
        """Hook run by every load before anything is read or shared: raise to refuse the
        caller this aggregate (`TenantAggregateRepository` checks the tenant here)."""

    def _outgoing(self, events: Sequence[DomainEvent]) -> Sequence[DomainEvent]:
        """Hook: the events `save` appends, from the aggregate's new events (stamped,
        checked)."""
        return events

    def _flight_key(self, aggregate_id: UUID) -> Hashable:
        """Hook: loads with equal keys may share one read (single flight)."""
        return aggregate_id

    def _event_check(self) -> Callable[[DomainEvent], None] | None:
        """Hook run once per read: None (the default) reads without checks; a callable is
        called with every event the load uses and raises to refuse it. Then the event at
        the version of a cache entry or snapshot is read and checked too (so what the load
        starts from is vouched for by its stream), and the load replays the whole stream
        when that event is missing."""
        return None

    async def _read(self, aggregate_id: UUID) -> TAggregate:
        """Cached state or snapshot, then the events after it."""
        aggregate = self.aggregate_factory(aggregate_id)
        schema = type(aggregate).schema_version
        started_from = 0
        cache_hit = False
        if self.cache is not None:
            entry = self.cache.get(self.aggregate_type, aggregate_id)
            if entry is not None and entry.schema_version == schema:
                try:
                    aggregate.restore_snapshot(entry.state, entry.version)
                except ValidationError:  # the state model changed its mind: replay
                    self.cache.discard(self.aggregate_type, aggregate_id)
                    aggregate = self.aggregate_factory(aggregate_id)
                else:
                    started_from = entry.version
                    cache_hit = True
                    self.stats.cache_hits += 1
        if not started_from and self.snapshot_store and self.snapshot_policy.use_snapshots:
            snapshot = await self.snapshot_store.get(aggregate_id, self.aggregate_type)
            if snapshot is not None:
                started_from = self._restore(aggregate, snapshot, schema)
        check = self._event_check()
        if check is None:
            replayed = await self._replay(aggregate, started_from)
        else:
            checked = await self._replay_checked(aggregate, started_from, check)
            if checked is None:  # nothing in the stream vouches for the base: replay it all
                aggregate = self.aggregate_factory(aggregate_id)
                started_from, cache_hit = 0, False
                checked = await self._replay_checked(aggregate, 0, check)
            assert checked is not None
            replayed = checked
        self.stats.events_replayed += replayed
        telemetry.annotate("eventsource.load.replayed", replayed)
        if started_from:
            telemetry.annotate("eventsource.load.started_from", started_from)
        if aggregate.version and (replayed or not cache_hit):
            self._remember(aggregate)
        return aggregate

    async def _replay(self, aggregate: TAggregate, base: int) -> int:
        """Apply the events after version `base`; how many."""
        options = ReadOptions(from_version=base + 1, aggregate_type=self.aggregate_type)
        replayed = 0
        apply = aggregate.apply_event
        # Pages of decoded events: no StoredEvent and no generator hand-off per event.
        async with closing_iterator(
            self.event_store.read_stream_events(aggregate.aggregate_id, options)
        ) as pages:
            async for events in pages:
                for event in events:
                    apply(event, is_new=False)
                    replayed += 1
        return replayed

    async def _replay_checked(
        self, aggregate: TAggregate, base: int, check: Callable[[DomainEvent], None]
    ) -> int | None:
        """`_replay` with `check` run on every event, the one at version `base` included
        (read, checked, not applied); None when `base` > 0 and that event is missing."""
        options = ReadOptions(from_version=max(base, 1), aggregate_type=self.aggregate_type)
        replayed = 0
        vouched = base == 0
        # Closed when `check` raises: an abandoned read would hold its connection until
        # garbage collection.
        stream = self.event_store.read_stream(aggregate.aggregate_id, options)
        async with closing_iterator(stream) as events:
            async for stored in events:
                event = stored.event
                check(event)
                if stored.version == base:
                    vouched = True
                elif not vouched:
                    break  # the event at `base` is missing
                else:
                    aggregate.apply_event(event, is_new=False)
                    replayed += 1
        return replayed if vouched else None

    def _restore(self, aggregate: TAggregate, snapshot: Snapshot, schema: int) -> int:
        """Start `aggregate` from `snapshot` if it is usable; the version it starts from."""
        if snapshot.schema_version != schema:
            self.stats.snapshots_ignored += 1
            return 0
        try:
            aggregate.restore_snapshot(snapshot.state, snapshot.version)
        except ValidationError as exc:
            self.stats.snapshots_ignored += 1
            logger.warning(
                "ignoring the snapshot of %s %s at version %d: %s (replaying the stream)",
                self.aggregate_type,
                snapshot.aggregate_id,
                snapshot.version,
                exc.errors()[0]["msg"] if exc.errors() else exc,
            )
            return 0
        self.stats.snapshot_loads += 1
        return snapshot.version

    def _remember(self, aggregate: TAggregate) -> None:
        if self.cache is not None:
            state = self._state_text(aggregate)
            if state is None:
                return
            entry = CachedState(aggregate.committed_version, type(aggregate).schema_version, state)
            self.cache.put(self.aggregate_type, aggregate.aggregate_id, entry)

    def _state_text(self, aggregate: TAggregate) -> str | None:
        """The aggregate's `snapshot_state()` for a cache entry or a snapshot; None (and a
        warning, once per state model) when it would not restore to the same state: such
        an aggregate is loaded by replaying its events instead."""
        text = aggregate.snapshot_state()
        if aggregate.state_reads_back(text):
            return text
        state_type = type(aggregate.state)
        if state_type not in _UNFAITHFUL_STATES:
            _UNFAITHFUL_STATES.add(state_type)
            logger.warning(
                "%s state (%s) does not read back from its JSON as it was (a field excluded "
                "from serialization? a serializer that changes values?): its aggregates are "
                "not cached or snapshotted, they are loaded by replaying their events",
                self.aggregate_type,
                state_type.__qualname__,
            )
        return None

    async def exists(self, aggregate_id: UUID) -> bool:
        return await self.event_store.get_stream_version(aggregate_id) > 0

    # -- saving ------------------------------------------------------------------------------

    async def save(self, aggregate: TAggregate) -> AppendResult | None:
        """Append the aggregate's new events; None when there were none to save."""
        events = aggregate.uncommitted_events
        if not events:
            return None
        previous = aggregate.committed_version
        with telemetry.operation(
            f"save {self.aggregate_type}",
            lambda: {
                **self._span_attributes(aggregate.aggregate_id),
                telemetry.EXPECTED_VERSION: previous,
                telemetry.EVENT_COUNT: len(events),
            },
        ) as span:
            result = await self.event_store.append_events(
                aggregate.aggregate_id,
                self.aggregate_type,
                self._outgoing(events),
                expected_version=previous,
            )
            span.set(telemetry.VERSION, result.new_version)
            aggregate.mark_events_as_committed()
            self._remember(aggregate)
            if self.snapshot_policy.due(previous, result.new_version):
                await self._take_snapshot(aggregate)
            if self.event_publisher is not None:
                await self.event_publisher.publish(result.events)
        return result

    async def snapshot(self, aggregate: TAggregate) -> None:
        """Take a snapshot of a saved aggregate now (for `SnapshotPolicy.manual()`)."""
        if self.snapshot_store is None:
            raise ValueError("this repository has no snapshot_store")
        if aggregate.has_uncommitted_events:
            raise ValueError("save the aggregate before taking its snapshot")
        if aggregate.version:
            await self._take_snapshot(aggregate)

    async def _take_snapshot(self, aggregate: TAggregate) -> None:
        assert self.snapshot_store is not None
        # The state is captured now, at the saved version, even when written in the background.
        state = self._state_text(aggregate)
        if state is None:
            return
        snapshot = Snapshot(
            aggregate_id=aggregate.aggregate_id,
            aggregate_type=self.aggregate_type,
            version=aggregate.version,
            schema_version=type(aggregate).schema_version,
            state=state,
        )
        if not self.snapshot_in_background:
            await self._write_snapshot(self.snapshot_store, snapshot)
            return
        task = asyncio.create_task(self._write_snapshot(self.snapshot_store, snapshot))
        self._snapshot_tasks.add(task)
        task.add_done_callback(self._snapshot_tasks.discard)

    async def _write_snapshot(self, store: SnapshotStore, snapshot: Snapshot) -> None:
        try:
            with telemetry.operation(
                f"snapshot {snapshot.aggregate_type}",
                lambda: {
                    **self._span_attributes(snapshot.aggregate_id),
                    telemetry.VERSION: snapshot.version,
                },
            ):
                await store.save(snapshot)
        except Exception:
            self.stats.snapshot_failures += 1
            logger.warning(
                "could not save the snapshot of %s %s at version %d",
                snapshot.aggregate_type,
                snapshot.aggregate_id,
                snapshot.version,
                exc_info=True,
            )
        else:
            self.stats.snapshots_taken += 1

    async def close(self) -> None:
        """Wait for background snapshot writes (the stores are not closed: they are shared)."""
        while self._snapshot_tasks:
            await asyncio.gather(*self._snapshot_tasks)

    # -- commands ----------------------------------------------------------------------------

    @overload
    async def execute(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], Awaitable[R]],
        *,
        create: bool = False,
    ) -> R: ...

    @overload
    async def execute(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], R],
        *,
        create: bool = False,
    ) -> R: ...

    async def execute(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], Any],
        *,
        create: bool = False,
    ) -> Any:
        """Load, run `command(aggregate)`, save; on a version conflict start over.

        The command (sync or async) is rerun on freshly loaded state up to `max_retries`
        times, after a pause with exponential backoff and full jitter (so writers that
        collided do not collide again in lockstep); after that the `OptimisticLockError`
        propagates. With `create=True` a missing aggregate is created instead of raising
        `AggregateNotFoundError`. With `serialize_commands`, commands for one aggregate wait
        for each other in this process. Returns what the command returned;
        `execute_command` also returns what was appended (for read-your-writes).
        """
        return (await self.execute_command(aggregate_id, command, create=create)).value

    @overload
    async def execute_command(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], Awaitable[R]],
        *,
        create: bool = False,
    ) -> CommandResult[R]: ...

    @overload
    async def execute_command(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], R],
        *,
        create: bool = False,
    ) -> CommandResult[R]: ...

    async def execute_command(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], Any],
        *,
        create: bool = False,
    ) -> CommandResult[Any]:
        """`execute`, returning a `CommandResult`: the command's value, the append and its
        `position`, the consistency token a query waits for (`Subscription.wait_for`)."""
        with telemetry.operation(
            f"execute {self.aggregate_type}", lambda: self._span_attributes(aggregate_id)
        ) as span:
            if not self.serialize_commands:
                return await self._execute(aggregate_id, command, create, span)
            async with self._locks.hold(aggregate_id):
                return await self._execute(aggregate_id, command, create, span)

    async def _execute(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], Any],
        create: bool,
        span: telemetry.Operation,
    ) -> CommandResult[Any]:
        attempt = 0
        while True:
            if create:
                aggregate = await self.load_or_create(aggregate_id)
            else:
                aggregate = await self.load(aggregate_id)
            outcome = command(aggregate)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            try:
                appended = await self.save(aggregate)
            except OptimisticLockError:
                if attempt >= self.max_retries:
                    raise
                attempt += 1
                span.set("eventsource.command.retries", attempt)
                await asyncio.sleep(backoff_delay(attempt, base=_BACKOFF_BASE, cap=_BACKOFF_CAP))
                continue
            return CommandResult(outcome, appended, aggregate.version)
