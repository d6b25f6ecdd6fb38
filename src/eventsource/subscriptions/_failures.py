"""What `Subscription` does when its handler fails on an event: retries with backoff, the
circuit breaker, dead letters, `on_undecodable="stop"`, and parking per aggregate
(`park_aggregate`: the later events of an aggregate behind a dead letter wait in the
dead-letter sink, and `release_parked` delivers them in feed order once it is resolved).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast
from uuid import UUID

from eventsource._internal.retry import backoff_delay
from eventsource.protocols import DeadLetterStatus
from eventsource.stores.interface import EventStore, StoredEvent
from eventsource.subscriptions._faults import is_infrastructure_error
from eventsource.subscriptions.interface import (
    AggregateParkedError,
    DeadLetterSink,
    EventCallback,
    ListingDeadLetterSink,
    NotAdmittedError,
    SubscriptionConfig,
    SubscriptionState,
)

__all__ = ["FailurePolicy"]

logger = logging.getLogger("eventsource.subscriptions.subscription")

_PARKED_LIMIT = 10_000
"""Dead letters read to find the parked aggregates (the oldest first)."""


class FailurePolicy:
    """`Subscription`'s handling of failed events (a mixin: the loop lives in
    `Subscription`)."""

    if TYPE_CHECKING:  # what this part uses of `Subscription`
        name: str
        config: SubscriptionConfig
        state: SubscriptionState
        last_error: str | None
        dead_lettered: int
        _store: EventStore
        _dead_letters: DeadLetterSink | None
        _parked: set[UUID] | None
        _park_lock: asyncio.Lock
        _wake: asyncio.Event
        _stopping: bool
        _failed: bool
        _consecutive_failures: int
        _deliver: EventCallback

        async def _sleep_until_woken(
            self, seconds: float | None = None, *, stop_only: bool = False
        ) -> None: ...
        async def refusal(self, stored: StoredEvent) -> str | None: ...
        async def handle(self, stored: StoredEvent) -> None: ...

    def _recovered(self) -> None:
        self._consecutive_failures = 0
        if self.state is SubscriptionState.CIRCUIT_OPEN:
            logger.info("subscription %s: circuit closed again", self.name)
            self.state = SubscriptionState.CATCHING_UP

    async def _deliver_failed(self, stored: StoredEvent, first: Exception) -> bool:
        """The handler failed once on `stored`: retry, or park it; False when the
        subscription must stop (the event stays unprocessed)."""
        error: Exception | None = first
        tried = 1
        decode_error = stored.decode_error()
        undecodable = decode_error is not None
        if undecodable:
            await self._store.load_envelope(stored)  # its ids, for the log and the dead letter
        if decode_error is not None and self.config.on_undecodable == "stop":
            return self._stop_at_undecodable(stored, decode_error)
        while True:
            if error is None:
                self._recovered()
                return True
            if is_infrastructure_error(error):
                raise error  # the database, not the event: `_run` backs off, delivers it again
            if tried < self.config.max_attempts:
                error = await self._attempt(stored, first_attempt=tried + 1)
                tried = self.config.max_attempts
                continue
            self.last_error = f"{type(error).__qualname__}: {error}"
            if not undecodable:  # poison by itself, never a sign of a systemic failure
                self._consecutive_failures += 1
            breaker = self.config.circuit_breaker
            if breaker is not None and self._consecutive_failures >= breaker.failures:
                # So many events in a row failing is the handler's world failing (a database
                # down), not these events: stop dead-lettering, wait, and try this one again.
                if self.state is not SubscriptionState.CIRCUIT_OPEN:
                    logger.warning(
                        "subscription %s: %d events failed in a row, circuit open for %ss: %s",
                        self.name,
                        self._consecutive_failures,
                        breaker.cooldown,
                        self.last_error,
                    )
                self.state = SubscriptionState.CIRCUIT_OPEN
                self._wake.clear()
                await self._sleep_until_woken(breaker.cooldown, stop_only=True)
                if self._stopping:
                    return False
                error = await self._attempt(stored, first_attempt=1)
                continue
            return await self._park(stored, error)

    def _stop_at_undecodable(self, stored: StoredEvent, error: Exception) -> bool:
        """`on_undecodable="stop"`: FAILED at this event, which stays unprocessed."""
        self._failed = True  # `_run` says FAILED once the checkpoint is saved
        self.last_error = (
            f"cannot decode the stored {stored.event_type!r} event {stored.event_id} at "
            f"position {stored.position} (on_undecodable='stop'): "
            f"{type(error).__qualname__}: {error}"
        )
        logger.error("subscription %s stopped: %s", self.name, self.last_error)
        return False

    async def _attempt(self, stored: StoredEvent, *, first_attempt: int) -> Exception | None:
        """Tries `first_attempt`..`max_attempts`, with backoff before each: None when one
        succeeded, else the last error."""
        error: Exception | None = None
        for attempt in range(first_attempt, self.config.max_attempts + 1):
            if attempt > 1:
                pause = backoff_delay(
                    attempt - 1, base=self.config.retry_base, cap=self.config.retry_cap
                )
                await asyncio.sleep(pause)
            try:
                await self._deliver(stored)
            except Exception as exc:
                error = exc
                continue
            return None
        return error

    async def _park(self, stored: StoredEvent, error: Exception) -> bool:
        if self._dead_letters is None:
            self._failed = True  # `_run` says FAILED once the checkpoint is saved
            logger.error(
                "subscription %s stopped at %s (%s %s): %s; no dead-letter sink to park it in",
                self.name,
                stored.position,
                stored.event_type,
                stored.event_id,
                self.last_error,
            )
            return False
        await self._dead_letters.add(self.name, stored, error, self.config.max_attempts)
        self.dead_lettered += 1
        if self._parked is not None:
            self._parked.add(stored.aggregate_id)
        logger.warning(
            "subscription %s dead-lettered %s %s at %s after %d attempts: %s",
            self.name,
            stored.event_type,
            stored.event_id,
            stored.position,
            self.config.max_attempts,
            self.last_error,
        )
        return True

    # -- parking per aggregate (`park_aggregate`) -----------------------------------------

    def _listing_sink(self) -> ListingDeadLetterSink:
        return cast(ListingDeadLetterSink, self._dead_letters)

    async def _load_parked(self) -> set[UUID]:
        """The aggregates of this subscription's waiting dead letters (kept across restarts
        by the dead-letter repository itself)."""
        parked: set[UUID] = set()
        sink = self._listing_sink()
        for status in (DeadLetterStatus.FAILED, DeadLetterStatus.RETRYING):
            for letter in await sink.list(self.name, status=status, limit=_PARKED_LIMIT):
                parked.add((await self._store.get_event(letter.event_id)).aggregate_id)
        return parked

    async def _parked_behind(self, stored: StoredEvent) -> bool:
        """Park `stored` untried when its aggregate is parked; True when it was."""
        parked = self._parked
        if parked is None or stored.aggregate_id not in parked:
            return False
        async with self._park_lock:  # a release in progress decides first
            if stored.aggregate_id not in parked:
                return False
            error = AggregateParkedError(stored.aggregate_id)
            await self._listing_sink().add(self.name, stored, error, 0)
        self.dead_lettered += 1
        return True

    async def release_parked(self, aggregate_id: UUID) -> bool:
        """Deliver the events parked behind `aggregate_id`'s dead letter, in feed order, each
        resolved (by "retry") once handled; then the aggregate flows again and True is
        returned. False when one fails again: it and the rest stay parked."""
        parked = self._parked
        if parked is None or aggregate_id not in parked:
            return True
        sink = self._listing_sink()
        async with self._park_lock:
            waiting = []
            for letter in await sink.list(self.name, limit=_PARKED_LIMIT):
                stored = await self._store.get_event(letter.event_id)
                if stored.aggregate_id == aggregate_id:
                    waiting.append((stored.position, letter.id, stored))
            for _, letter_id, stored in sorted(waiting, key=lambda w: w[0]):
                reason = await self.refusal(stored)
                if reason is not None:  # left as it is; the aggregate stays parked
                    logger.warning(
                        "subscription %s: %s",
                        self.name,
                        NotAdmittedError(
                            self.name, stored.event_id, reason, dead_letter_id=letter_id
                        ),
                    )
                    return False
                if not await sink.mark_retrying(letter_id):
                    return False  # being retried elsewhere
                try:
                    await self.handle(stored)
                except Exception as exc:
                    await sink.add(self.name, stored, exc, 1)
                    return False
                await sink.resolve(letter_id, resolved_by="retry")
            parked.discard(aggregate_id)
        return True
