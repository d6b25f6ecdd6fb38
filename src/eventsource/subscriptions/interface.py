"""What a subscription needs from the outside, and how it is configured.

Checkpoints and dead letters are kept by repositories (`eventsource.repositories`, a layer
above this one), so subscriptions name only the few methods they call, as Protocols.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, Protocol, runtime_checkable
from uuid import UUID

from eventsource.exceptions import EventSourceError
from eventsource.protocols import CheckpointStore, DeadLetterSink, DeadLetterStatus
from eventsource.stores.interface import StoredEvent

__all__ = [
    "AggregateParkedError",
    "BatchCallback",
    "BatchHandler",
    "CheckpointStore",
    "CheckpointStrategy",
    "CircuitBreaker",
    "DeadLetterSink",
    "EventCallback",
    "Lease",
    "LeaseProvider",
    "NotAdmittedError",
    "SubscriptionConfig",
    "SubscriptionState",
]

EventCallback = Callable[[StoredEvent], Awaitable[None]]


class BatchCallback(Protocol):
    """`BatchHandler.handle_batch`, as a subscription calls it."""

    async def __call__(self, events: Sequence[StoredEvent], *, processed: int) -> None: ...


@runtime_checkable
class BatchHandler(Protocol):
    """A handler that takes a subscription's events several at a time and records them in
    the subscription's checkpoint itself, in the transaction of their effects
    (`DatabaseProjection`). A subscription detects it and hands it each page of the feed it
    reads, as much as is there (it never waits to fill a batch)."""

    async def handle_batch(self, events: Sequence[StoredEvent], *, processed: int) -> None:
        """Apply `events` (admitted by the subscription's filter, in feed order) and move the
        checkpoint to the last of them, adding `processed` to its count (these events and
        those the subscription passed over since its checkpoint last moved). All or nothing:
        raise having applied none of them; the subscription then delivers them one at a
        time (one-event batches) to find the one that fails. Events at or before the
        checkpoint were applied already (a COMMIT whose reply was lost, another process):
        skip them."""
        ...


class AggregateParkedError(EventSourceError):
    """The error a dead letter records for an event parked, not tried, because an earlier
    event of its aggregate is in the dead-letter queue (`SubscriptionConfig.park_aggregate`).
    """

    def __init__(self, aggregate_id: UUID) -> None:
        self.aggregate_id = aggregate_id
        super().__init__(
            f"not delivered: an earlier event of aggregate {aggregate_id} is in the dead-letter "
            "queue; retry that dead letter (manager.retry_dead_letter) to deliver this one after "
            "it, in order"
        )


class NotAdmittedError(EventSourceError):
    """An event was to be handed to a subscription whose filter does not admit it (another
    tenant's, another event or aggregate type, another partition's): typically a dead-letter
    retry. The event is not handed to the handler and the dead letter is left as it was."""

    def __init__(
        self,
        subscription: str,
        event_id: UUID,
        reason: str,
        *,
        dead_letter_id: UUID | None = None,
    ) -> None:
        self.subscription = subscription
        self.event_id = event_id
        self.reason = reason
        self.dead_letter_id = dead_letter_id
        where = f"dead letter {dead_letter_id}: " if dead_letter_id is not None else ""
        super().__init__(
            f"{where}event {event_id} is not for subscription {subscription!r}: {reason}. "
            "It was not handed to the handler"
            + (
                " and the dead letter is left as it was; resolve it by hand "
                "(dead_letters.resolve(id, resolved_by=...)) once dealt with"
                if dead_letter_id is not None
                else ""
            )
        )


class ListingDeadLetterSink(DeadLetterSink, Protocol):
    """A dead-letter sink that can also list its letters (every `DLQRepository`)."""

    async def list(
        self,
        subscription: str | None = None,
        *,
        status: DeadLetterStatus | None = DeadLetterStatus.FAILED,
        limit: int = 100,
    ) -> Sequence[_ListedLetter]: ...


class _ListedLetter(Protocol):
    @property
    def id(self) -> UUID: ...

    @property
    def event_id(self) -> UUID: ...


class Lease(Protocol):
    """The right to run a subscription, held by one process at a time."""

    async def alive(self) -> bool: ...

    async def release(self) -> None: ...


class LeaseProvider(Protocol):
    """Hands out leases by subscription name (see `PostgreSQLLeases`)."""

    async def try_acquire(self, name: str) -> Lease | None: ...


class SubscriptionState(enum.StrEnum):
    STARTING = "starting"
    STANDBY = "standby"
    """Another process holds the subscription's lease; this one takes over if it goes."""
    CATCHING_UP = "catching_up"
    """Reading the feed's backlog."""
    LIVE = "live"
    """Caught up; waiting for new events."""
    PAUSED = "paused"
    CIRCUIT_OPEN = "circuit_open"
    """Too many events failed in a row: waiting before trying the current one again."""
    RECONNECTING = "reconnecting"
    """The database or broker failed (connection lost, restarting): retrying with backoff
    until it is back, then going on from where it was (`last_error` says what failed)."""
    STOPPED = "stopped"
    FAILED = "failed"
    """Stopped by an event that could not be handled and had nowhere to go (no DLQ), or by
    an undecodable event under `on_undecodable="stop"`."""


@dataclass(frozen=True, slots=True)
class CheckpointStrategy:
    """When a subscription saves its position: after every event, after every batch (the
    default), or at most every `seconds` (and when it stops). Events after the last saved
    position are delivered again after a crash: handlers must be idempotent, or keep their
    checkpoint in their own transaction."""

    kind: Literal["event", "batch", "periodic"] = "batch"
    seconds: float = 0.0

    @classmethod
    def every_event(cls) -> CheckpointStrategy:
        return cls("event")

    @classmethod
    def every_batch(cls) -> CheckpointStrategy:
        return cls("batch")

    @classmethod
    def periodic(cls, interval: timedelta | float) -> CheckpointStrategy:
        seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
        if seconds <= 0:
            raise ValueError(f"a checkpoint interval must be positive, got {seconds}")
        return cls("periodic", seconds)


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """After `failures` events in a row exhausted their retries, stop parking events in the
    dead-letter queue: wait `cooldown` seconds and try the current event again, until one
    succeeds. A systemic failure (the read model's database down) then delays the
    subscription instead of dead-lettering the whole feed."""

    failures: int = 5
    cooldown: float = 30.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"failures must be >= 1, got {self.failures}")
        if self.cooldown <= 0:
            raise ValueError(f"cooldown must be positive, got {self.cooldown}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionConfig:
    """How one subscription reads and delivers.

    `start_from` applies only when the subscription has no checkpoint yet ("beginning" replays
    the whole feed, "end" takes only new events). Filters are pushed down to the store's read.
    A failing event is tried `max_attempts` times with exponential backoff and full jitter
    (from `retry_base` up to `retry_cap` seconds), then handed to the dead-letter sink; without
    one the subscription stops in state FAILED and the event stays unprocessed. Infrastructure
    failures (a lost connection, a database restarting: of the store, the checkpoints, the
    dead-letter sink, the leases, or inside the handler) are not the event's: the subscription
    turns RECONNECTING and retries with the same backoff until they pass, never giving up.
    `poll_interval` bounds how long a lost wake-up signal can delay delivery. `circuit_breaker`
    (None to turn it off) stops a run of failures from filling the dead-letter queue.
    `on_undecodable` says what to do with a stored event that cannot be decoded (a type this
    process does not register, a corrupt payload, a failing upcaster) and that the handler
    reads: "dead_letter" treats it like a failing event (retries, then a dead letter keeping
    the raw row; such events never open the circuit), "stop" stops the subscription in state
    FAILED at once, the event unprocessed. Events the handler skips are never decoded.

    With `park_aggregate`, a dead-lettered event parks its aggregate: the aggregate's later
    events go to the dead-letter queue too, untried (`AggregateParkedError`), while other
    aggregates flow on, until retrying the first one succeeds and releases them in order. Off
    by default: one bad event then holds back nothing, which suits read models that tolerate
    a missing event; turn it on when a read model must never apply an aggregate's event
    without the ones before it. It needs a dead-letter repository.
    """

    start_from: Literal["beginning", "end"] = "beginning"
    batch_size: int = 500
    checkpoint: CheckpointStrategy = CheckpointStrategy()
    event_types: Collection[str] | None = None
    aggregate_type: str | None = None
    tenant_id: UUID | None = None
    max_attempts: int = 3
    retry_base: float = 0.05
    retry_cap: float = 5.0
    poll_interval: float = 1.0
    circuit_breaker: CircuitBreaker | None = CircuitBreaker()
    on_undecodable: Literal["dead_letter", "stop"] = "dead_letter"
    park_aggregate: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {self.poll_interval}")
        if self.start_from not in ("beginning", "end"):
            raise ValueError(f"start_from must be 'beginning' or 'end', not {self.start_from!r}")
        if self.on_undecodable not in ("dead_letter", "stop"):
            raise ValueError(
                f"on_undecodable must be 'dead_letter' or 'stop', not {self.on_undecodable!r}"
            )
