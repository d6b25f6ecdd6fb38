"""`SubscriptionManager`: runs named subscriptions of one event store in this process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Protocol, Self, runtime_checkable
from uuid import UUID

from eventsource._internal import telemetry
from eventsource.exceptions import ConfigurationError
from eventsource.projections.base import Projection
from eventsource.projections.database import DatabaseProjection
from eventsource.protocols import DeadLetterStatus
from eventsource.stores.interface import EventStore, Position
from eventsource.subscriptions.interface import (
    BatchHandler,
    CheckpointStore,
    DeadLetterSink,
    EventCallback,
    LeaseProvider,
    NotAdmittedError,
    SubscriptionConfig,
    SubscriptionState,
)
from eventsource.subscriptions.partitions import (
    PartitionBudget,
    partition_name,
)
from eventsource.subscriptions.subscription import Subscription, SubscriptionHealth

__all__ = ["ManagerHealth", "RebuildProgress", "SubscriptionManager"]

logger = logging.getLogger(__name__)


def tenant_key(name: str, tenant_id: UUID | None) -> str:
    """The name a subscription runs under (its checkpoint, dead letters and lease): `name`
    itself without a tenant or when it names its tenant already, else `name@<tenant id>`,
    so per-tenant subscriptions of one projection never share a checkpoint."""
    if tenant_id is None or str(tenant_id) in name:
        return name
    return f"{name}@{tenant_id}"


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    """Reported while a rebuild replays the feed: how far it is, against the feed's end at
    the moment the rebuild started. `total`, `percent`, `rate` and `eta` are what a progress
    bar shows; `position` and `target` are the raw feed positions."""

    name: str
    processed: int
    """Events replayed so far (handled, passed over or dead-lettered)."""
    position: Position | None
    target: Position
    done: bool
    total: int = 0
    """Events the replay reads up to `target`, counted by the store when it started (its
    filters applied; events appended meanwhile are not in it)."""
    elapsed: float = 0.0
    """Seconds since the replay started."""

    @property
    def percent(self) -> float:
        """`processed` as a share of `total`, 0 to 100 (100 once done)."""
        if self.done or self.total <= 0:
            return 100.0 if self.done else 0.0
        return min(100.0, 100.0 * self.processed / self.total)

    @property
    def rate(self) -> float:
        """Events replayed per second since the start (0 before the first)."""
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate: 0 once done, None before a rate is known."""
        if self.done:
            return 0.0
        rate = self.rate
        if rate <= 0:
            return None
        return max(0, self.total - self.processed) / rate


class _HorizonLag(Protocol):
    @property
    def blocking_pid(self) -> int | None: ...

    @property
    def oldest_transaction_age(self) -> timedelta | None: ...


@runtime_checkable
class _HorizonReporter(Protocol):
    """A store whose feed an open writing transaction can hold back (PostgreSQL)."""

    async def horizon_lag(self) -> _HorizonLag: ...


@dataclass(frozen=True, slots=True)
class ManagerHealth:
    subscriptions: tuple[SubscriptionHealth, ...]
    feed_stuck_for: timedelta | None = None
    """How long one writing transaction has held the store's feed back, when that is longer
    than the manager's `horizon_threshold` (PostgreSQL); None otherwise."""
    feed_blocked_by: int | None = None
    """The backend pid of that transaction (`pg_stat_activity.pid`)."""

    @property
    def healthy(self) -> bool:
        """No subscription has failed and no writer holds the feed back past the threshold
        (every subscription would wait for it, whatever it does itself)."""
        return self.feed_stuck_for is None and all(s.healthy for s in self.subscriptions)

    @property
    def ready(self) -> bool:
        """Every subscription is live and caught up (readiness)."""
        return all(s.ready for s in self.subscriptions)


class SubscriptionManager:
    """Starts, wakes, pauses and stops the subscriptions of one event store.

    Subscribe a `Projection` (its `name` and `interested_in()` become the subscription's name
    and event filter) or any `async def handler(stored_event)` with a name. One append signal
    (`event_store.listen()`) wakes every subscription; each also polls, so a lost signal only
    delays. Checkpoints go to `checkpoints`; events that keep failing go to `dead_letters`
    (without one, such an event stops its subscription in state FAILED).

    With `leases` (e.g. `PostgreSQLLeases.for_store(store)`) several processes can run the same
    subscriptions: one holds each subscription's lease and runs it, the others stand by and
    take over from its checkpoint when it goes away.

    While it runs and an OpenTelemetry meter provider records, it counts the waiting dead
    letters of each subscription every `metrics_interval` seconds for the
    `eventsource.dlq.size` gauge.
    """

    def __init__(
        self,
        event_store: EventStore,
        checkpoints: CheckpointStore,
        dead_letters: DeadLetterSink | None = None,
        *,
        config: SubscriptionConfig | None = None,
        leases: LeaseProvider | None = None,
        metrics_interval: float = 15.0,
        horizon_threshold: timedelta | float = 60.0,
    ) -> None:
        if metrics_interval <= 0:
            raise ValueError(f"metrics_interval must be positive, got {metrics_interval}")
        if not isinstance(horizon_threshold, timedelta):
            horizon_threshold = timedelta(seconds=horizon_threshold)
        if horizon_threshold <= timedelta(0):
            raise ValueError(f"horizon_threshold must be positive, got {horizon_threshold}")
        self.horizon_threshold = horizon_threshold
        self.event_store = event_store
        self.metrics_interval = metrics_interval
        self.leases = leases
        self.checkpoints = checkpoints
        self.dead_letters = dead_letters
        self.config = config or SubscriptionConfig()
        self._subscriptions: dict[str, Subscription] = {}
        self._handlers: dict[str, Projection | EventCallback] = {}
        self._requested: dict[str, SubscriptionConfig] = {}
        """The config each subscription was given (before a projection's interest became
        its event types): what `replace` subscribes the new version with."""
        self._listener: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._dead_letter_sizes: dict[str, int] = {}
        self._started = False

    def subscribe(
        self,
        handler: Projection | EventCallback,
        *,
        name: str | None = None,
        config: SubscriptionConfig | None = None,
    ) -> Subscription:
        """Add a subscription (started at once when the manager runs already).

        With `config.tenant_id`, the subscription runs under `name@<tenant id>` (unless the
        name contains the tenant id already): its checkpoint, dead letters and lease are then
        the tenant's own. Returns the subscription; its `name` is that key."""
        requested = config or self.config
        name, callback, config = self._callback(handler, name, requested)
        checkpoints: CheckpointStore = self.checkpoints
        batch = None
        if isinstance(handler, DatabaseProjection):
            # its checkpoint moves inside each event's transaction: read and save it there
            checkpoints = handler.checkpoint_store
        if isinstance(handler, Projection) and isinstance(handler, BatchHandler):
            batch = handler.handle_batch  # pages of the feed go to it, at once
            if name != handler.name:
                raise ConfigurationError(
                    f"{type(handler).__name__} {handler.name!r} keeps its checkpoint under its"
                    f" own name, but would run as {name!r}: give each tenant's projection a name "
                    f"that contains its tenant id (projection.name = f'{handler.name}@{{tenant}}'"
                    ") and subscribe it without another name"
                )
        if name in self._subscriptions:
            raise ValueError(f"a subscription named {name!r} exists already")
        subscription = Subscription(
            name,
            callback,
            self.event_store,
            checkpoints,
            self.dead_letters,
            config,
            self.leases,
            batch=batch,
        )
        self._subscriptions[name] = subscription
        self._handlers[name] = handler
        self._requested[name] = requested
        if self._started:
            subscription.start()
        return subscription

    def _callback(
        self,
        handler: Projection | EventCallback,
        name: str | None,
        config: SubscriptionConfig | None,
    ) -> tuple[str, EventCallback, SubscriptionConfig]:
        """The subscription's key (`tenant_key`), callback and config (a projection's
        interest becomes the event-type filter unless the config sets one)."""
        config = config or self.config
        if isinstance(handler, Projection):
            interest = handler.interested_in()
            if config.event_types is None and interest is not None:
                config = dataclasses.replace(config, event_types=interest)
            return tenant_key(name or handler.name, config.tenant_id), handler.handle, config
        if not name:
            raise ValueError("a subscription of a plain handler needs a name")
        return tenant_key(name, config.tenant_id), handler, config

    def subscribe_partitioned(
        self,
        handler: Projection | EventCallback,
        partitions: int,
        *,
        name: str | None = None,
        config: SubscriptionConfig | None = None,
        per_process: int | None = None,
        takeover_after: float = 30.0,
    ) -> list[Subscription]:
        """Split one subscription into `partitions` by aggregate id (see `partitions.py`).

        Each partition is a subscription named `<name>.p<i>of<n>` with its own checkpoint
        (`<name>@<tenant id>.p<i>of<n>` with `config.tenant_id`, as in `subscribe`).
        With `leases`, this process runs at most `per_process` partitions (default: all) and
        takes more only when they have been free for `takeover_after` seconds; without
        leases, all partitions run here, concurrently. The partition count is part of the
        checkpoints' names: changing it starts the new partitions from `start_from`.
        """
        if partitions < 2:
            raise ValueError("partition a subscription into 2 or more; or use subscribe()")
        if isinstance(handler, DatabaseProjection):
            raise ValueError(
                "a DatabaseProjection keeps one checkpoint under its name: run it unpartitioned"
            )
        requested = config or self.config
        name, callback, config = self._callback(handler, name, requested)
        leases: LeaseProvider | None = None
        if self.leases is not None:
            leases = PartitionBudget(self.leases, per_process or partitions, takeover_after)
        created = []
        for partition in range(partitions):
            part = partition_name(name, partition, partitions)
            if part in self._subscriptions:
                raise ValueError(f"a subscription named {part!r} exists already")
            subscription = Subscription(
                part,
                callback,
                self.event_store,
                self.checkpoints,
                self.dead_letters,
                config,
                leases,
                partition=(partition, partitions),
            )
            self._subscriptions[part] = subscription
            self._handlers[part] = callback
            self._requested[part] = requested
            created.append(subscription)
            if self._started:
                subscription.start()
        return created

    async def rebuild(
        self,
        name: str,
        *,
        progress: Callable[[RebuildProgress], object] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - bounds the whole replay
    ) -> Subscription:
        """Replay a subscription from the beginning of the feed, in place.

        Stops it (its batch finishes), resets its checkpoint, calls the projection's
        `reset()`, and runs it again from the first event; `progress` is called about five
        times a second until the replay reaches the feed's end as of the start. Returns the new
        subscription object, which then goes on live. While it replays, its read model is
        incomplete: build beside the live one with `replace` when readers must not notice.
        """
        old = self._subscriptions[name]
        await old.stop()
        handler = self._handlers[name]
        await old.checkpoints.reset(name, Position.START)  # even for start_from="end"
        if isinstance(handler, Projection):
            await handler.reset()
        del self._subscriptions[name]
        target = await self.event_store.current_position()
        subscription = self._subscriptions[name] = old.renewed()
        total = await subscription.count_to_read() if progress is not None else 0
        started = time.monotonic()
        subscription.start()
        async with asyncio.timeout(timeout):
            while True:
                done = subscription.position is not None and subscription.position >= target
                if progress is not None:
                    progress(
                        RebuildProgress(
                            name,
                            subscription.processed,
                            subscription.position,
                            target,
                            done,
                            total,
                            time.monotonic() - started,
                        )
                    )
                if done or target == Position.START:
                    return subscription
                if subscription.state is SubscriptionState.FAILED:
                    raise RuntimeError(f"rebuild of {name!r} failed: {subscription.last_error}")
                await asyncio.sleep(0.2)

    async def replace(
        self,
        old_name: str,
        projection: Projection,
        *,
        config: SubscriptionConfig | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - bounds the catch-up
    ) -> Subscription:
        """Blue-green: run `projection` (a new version, under a new name, usually writing to
        new tables) beside the subscription `old_name` until it has caught up with the feed,
        then stop and remove the old one. Switch your readers to the new read model when this
        returns; until then they keep reading the old, complete one.

        The new version is subscribed with `config`, by default the config the old one was
        given: the same tenant, filters and settings (a projection's `interested_in()` still
        picks its event types when that config sets none). `old_name` is the old
        subscription's name (`name@<tenant id>` for a tenant's, see `subscribe`)."""
        requested = config or self._requested.get(old_name, self.config)
        if tenant_key(projection.name, requested.tenant_id) == old_name:
            raise ValueError("the new projection needs another name than the one it replaces")
        if old_name not in self._subscriptions:
            raise LookupError(f"no subscription {old_name!r} runs in this manager to replace")
        new = self.subscribe(projection, config=requested)
        target = await self.event_store.current_position()
        if target != Position.START:
            await new.wait_for(target, timeout)
        old = self._subscriptions.pop(old_name)
        self._handlers.pop(old_name, None)
        self._requested.pop(old_name, None)
        await old.stop()
        return new

    def __getitem__(self, name: str) -> Subscription:
        return self._subscriptions[name]

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions.values())

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._listener = asyncio.create_task(self._relay_signals(), name="append signals")
        if self.dead_letters is not None:
            self._sampler = asyncio.create_task(self._sample_dead_letters(), name="dlq sizes")
            telemetry.watch("manager", self)
        for subscription in self._subscriptions.values():
            subscription.start()

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a grace period
        """Let every subscription finish its batch and save its checkpoint, then stop."""
        await asyncio.gather(*(s.stop(timeout) for s in self._subscriptions.values()))
        for task in (self._listener, self._sampler):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._listener = self._sampler = None
        telemetry.unwatch("manager", self)
        self._started = False

    async def retry_dead_letter(self, dead_letter_id: UUID) -> bool:
        """Hand a dead-lettered event to its subscription's handler again, once.

        On success the dead letter is resolved (by "retry") and True returned; on failure it
        goes back to FAILED with the new error and one more attempt, and False is returned.
        With `SubscriptionConfig.park_aggregate`, the events of its aggregate parked behind it
        are then delivered and resolved in order (False if one of them fails again).
        Raises `LookupError` for an unknown dead letter or subscription, `ValueError` when
        the dead letter is not FAILED (resolved, or being retried elsewhere), and
        `NotAdmittedError` when its event is one the subscription's filter does not admit
        (another tenant's, type or aggregate type): the event is not handed to the handler and
        the dead letter stays as it was.
        """
        if self.dead_letters is None:
            raise ValueError("this manager has no dead-letter repository")
        letter = await self.dead_letters.get(dead_letter_id)
        if letter is None:
            raise LookupError(f"no dead letter {dead_letter_id}")
        subscription = self._subscriptions.get(letter.subscription)
        if subscription is None:
            raise LookupError(
                f"dead letter {dead_letter_id} belongs to subscription {letter.subscription!r}, "
                "which this manager does not run"
            )
        stored = await self.event_store.get_event(letter.event_id)
        reason = await subscription.refusal(stored)
        if reason is not None:
            raise NotAdmittedError(
                subscription.name, stored.event_id, reason, dead_letter_id=dead_letter_id
            )
        if not await self.dead_letters.mark_retrying(dead_letter_id):
            raise ValueError(f"dead letter {dead_letter_id} is not waiting for a retry")
        try:
            await subscription.handle(stored)
        except Exception as exc:
            await self.dead_letters.add(letter.subscription, stored, exc, 1)
            return False
        await self.dead_letters.resolve(dead_letter_id, resolved_by="retry")
        # with `park_aggregate`: the aggregate's events parked behind it follow, in order
        return await subscription.release_parked(stored.aggregate_id)

    async def health(self) -> ManagerHealth:
        """Every subscription's state and lag, for liveness and readiness probes.

        Cheap and safe to call often: one `current_position()` call on the store, shared by
        all subscriptions (no event is read), and it never raises: when the store cannot be
        reached, each subscription reports `events_behind=None` and the error in
        `store_error`, and the manager is not ready. On PostgreSQL it also asks who holds the
        feed back: a writing transaction older than `horizon_threshold` makes it unhealthy
        (`feed_stuck_for`, `feed_blocked_by`)."""
        try:
            head = await self.event_store.current_position()
            error = None
        except Exception as exc:
            head, error = None, f"{type(exc).__qualname__}: {exc}"
        stuck_for = blocked_by = None
        if error is None and isinstance(self.event_store, _HorizonReporter):
            try:
                lag = await self.event_store.horizon_lag()
            except Exception:  # reported through store_error at the next call, if it lasts
                logger.warning("cannot read the feed's horizon lag", exc_info=True)
            else:
                age = lag.oldest_transaction_age
                if age is not None and age > self.horizon_threshold:
                    stuck_for, blocked_by = age, lag.blocking_pid
        return ManagerHealth(
            tuple(s.health_at(head, store_error=error) for s in self._subscriptions.values()),
            feed_stuck_for=stuck_for,
            feed_blocked_by=blocked_by,
        )

    async def run_until_shutdown(
        self, signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM)
    ) -> None:
        """Start, run until one of `signals` arrives, then stop gracefully."""
        loop = asyncio.get_running_loop()
        shutdown = asyncio.Event()
        installed = []
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, shutdown.set)
                installed.append(sig)
        try:
            await self.start()
            await shutdown.wait()
            logger.info("shutting down %d subscriptions", len(self._subscriptions))
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()

    @property
    def dead_letter_sizes(self) -> dict[str, int]:
        """Waiting (FAILED) dead letters per subscription, as last counted for the metrics
        (empty until an OpenTelemetry meter provider records)."""
        return dict(self._dead_letter_sizes)

    async def _sample_dead_letters(self) -> None:
        dead_letters = self.dead_letters
        assert dead_letters is not None
        while True:
            if telemetry.instruments() is not None:
                try:
                    self._dead_letter_sizes = {
                        name: await dead_letters.count(name, status=DeadLetterStatus.FAILED)
                        for name in list(self._subscriptions)
                    }
                except Exception:
                    logger.warning("cannot count dead letters for the metrics", exc_info=True)
            await asyncio.sleep(self.metrics_interval)

    async def _relay_signals(self) -> None:
        """Fan the store's append signals out to every subscription; reconnect on failure."""
        while True:
            try:
                async with self.event_store.listen() as appended:
                    while True:
                        await appended.wait()
                        for subscription in self._subscriptions.values():
                            subscription.wake()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("append signals lost; polling until they return", exc_info=True)
                await asyncio.sleep(1.0)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
