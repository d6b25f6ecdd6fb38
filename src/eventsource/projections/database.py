"""`DatabaseProjection`: read-model writes and the checkpoint commit in one transaction.

When the read model lives in the database that keeps the projection's checkpoint, the effects
of events and the checkpoint's move commit together: a crash rolls both back, the events are
delivered again, and their effects land once. Exactly-once effects, not just at-least-once
delivery.

A subscription hands it whole pages of the feed (`handle_batch`, the `BatchHandler` protocol):
one transaction per page, with one checkpoint write, to the page's last event. A transaction
per event spends most of its time in BEGIN/COMMIT round trips and the checkpoint upsert; a page
of 500 pays them once. The handlers still run one event at a time (`apply_batch` may be
overridden to write the page in a few statements). A page that fails is rolled back whole and
the subscription delivers its events again one at a time up to the failing one, so that it
alone takes the retry and dead-letter path (the events after it go on in a page again).

Each page transaction starts by reading the checkpoint with its row locked (created at the
start of the feed when missing, so there is always a row to lock) and skips the events at or
before it. That one statement per page covers what a shared transaction cannot: the
connection dies while the COMMIT is on its way, after the server committed but before its
reply arrived; the client cannot tell that from a rollback and the page comes again, and a
COMMIT still in flight finishes first. It also serialises two processes that run the same
projection at once (a lease holder that has not yet seen its lease go): the second waits for
the first's transaction and skips what it applied.

A single event (`handle`: a dead-letter retry, or a caller outside a subscription) runs in a
transaction of its own and is applied even when it lies behind the checkpoint (a dead letter
does). Such an event is marked "in doubt" when its COMMIT reply is lost; its next delivery then
reads the locked checkpoint and skips the handler when the checkpoint is at or past the event;
its checkpoint write must then move the checkpoint, or the transaction rolls back. Other single
deliveries pay nothing for this.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from eventsource.exceptions import EventSourceError, StoreConnectionError
from eventsource.projections.base import DeclaredHandlers, Projection
from eventsource.protocols import CheckpointStore
from eventsource.stores.interface import Position, StoredEvent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["DatabaseProjection", "TransactionalCheckpoints"]


class TransactionalCheckpoints(CheckpointStore, Protocol):
    """Checkpoints that can also be read and saved inside a caller's transaction
    (`PostgreSQLCheckpointRepository` is one)."""

    async def save_in(
        self,
        connection: AsyncConnection,
        name: str,
        position: Position,
        *,
        event_id: UUID | None = None,
        event_type: str | None = None,
        processed: int = 1,
    ) -> bool:
        """Move the checkpoint in `connection`'s transaction; False when it was at or past
        `position` already (nothing changed)."""
        ...

    async def locked_position_in(
        self, connection: AsyncConnection, name: str, *, create: bool = False
    ) -> Position | None:
        """The checkpoint's position read in `connection`'s transaction, its row locked until
        that transaction ends (a transaction still committing a move finishes first). With
        `create`, a missing checkpoint is first created at `Position.START` in that
        transaction (and locked: never None then)."""
        ...


_CONNECTION_STATES = ("57P01", "57P02", "57P03")  # admin shutdown, crash, cannot connect now


def _lost_connection(exc: BaseException) -> bool:
    """A network error, a server that ended or refused the session (SQLSTATE class 08,
    57P01-57P03), or an error SQLAlchemy recognised as a disconnect, anywhere in the chain of
    causes (typed errors of the library pass as they are)."""
    if not isinstance(exc, Exception) or isinstance(exc, EventSourceError):
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state in _CONNECTION_STATES):
            return True
        if getattr(current, "connection_invalidated", False):
            return True
        if isinstance(current, OSError | ConnectionError):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


class _AppliedMeanwhile(Exception):
    """Rolls back a delivery whose events turned out to be applied already."""


class DatabaseProjection(DeclaredHandlers, Projection):
    """A projection whose `@handles` methods get `(connection, event)`: a SQLAlchemy
    `AsyncConnection` in a transaction that also moves the projection's checkpoint.

    Build it with the engine of the read model's database and checkpoints kept in that same
    database. Subscribed to a `SubscriptionManager`, it is its own checkpoint store, so the
    subscription resumes exactly where the last committed transaction left off, and it gets
    the feed a page at a time (`handle_batch`): one transaction per page (the
    subscription's `batch_size` at most, only what is there when it is live). Override
    `apply_batch` to write a page in fewer statements. A lost connection raises
    `StoreConnectionError` (the subscription retries); events whose COMMIT reply was lost are
    recognised on their retry and not applied again (`already_applied` counts those).
    """

    def __init__(self, engine: AsyncEngine, checkpoints: TransactionalCheckpoints) -> None:
        self.engine = engine
        self.checkpoints = checkpoints
        self.already_applied = 0
        self._in_doubt: UUID | None = None

    @property
    def checkpoint_store(self) -> TransactionalCheckpoints:
        return self.checkpoints

    def interested_in(self) -> frozenset[str] | None:
        return frozenset(self._by_name)

    async def handle(self, stored: StoredEvent) -> None:
        in_doubt = self._in_doubt == stored.event_id
        committing = False
        try:
            async with self.engine.begin() as connection:
                if in_doubt and await self._applied(connection, stored.position):
                    raise _AppliedMeanwhile
                await self._apply(connection, stored)
                moved = await self.checkpoints.save_in(
                    connection,
                    self.name,
                    stored.position,
                    event_id=stored.event_id,
                    event_type=stored.event_type,
                )
                if in_doubt and moved is False:  # None (an older implementation) proves nothing
                    raise _AppliedMeanwhile
                committing = True
        except _AppliedMeanwhile:
            self.already_applied += 1
            self._in_doubt = None
            return
        except BaseException as exc:
            if committing:
                # The COMMIT was sent: it may have happened.
                self._in_doubt = stored.event_id
            if _lost_connection(exc):
                where = (
                    f"DatabaseProjection {self.name!r}: {stored.event_type} "
                    f"{stored.event_id} at {stored.position}"
                )
                raise StoreConnectionError(
                    f"{where}: the connection to the database was lost ({exc}); delivering"
                    " the event again is safe (an applied event is recognised and skipped)"
                ) from exc
            raise
        self._in_doubt = None

    async def handle_batch(self, events: Sequence[StoredEvent], *, processed: int) -> None:
        """Apply `events` (in feed order) in one transaction that moves the checkpoint to the
        last of them, adding `processed` to its count; those at or before the checkpoint are
        skipped (applied already: `already_applied` counts them). All or nothing: a failing
        handler rolls the whole batch back and its error propagates."""
        if not events:
            return
        last = events[-1]
        skipped = 0
        try:
            async with self.engine.begin() as connection:
                done = await self.checkpoints.locked_position_in(connection, self.name, create=True)
                fresh = events if done is None else [s for s in events if s.position > done]
                skipped = len(events) - len(fresh)
                if not fresh:
                    raise _AppliedMeanwhile
                await self.apply_batch(connection, fresh)
                moved = await self.checkpoints.save_in(
                    connection,
                    self.name,
                    last.position,
                    event_id=last.event_id,
                    event_type=last.event_type,
                    processed=max(0, processed - skipped),  # the skipped ones counted already
                )
                if moved is False:  # moved meanwhile (a checkpoint store that does not lock)
                    skipped = len(events)
                    raise _AppliedMeanwhile
        except _AppliedMeanwhile:
            pass
        except BaseException as exc:
            if _lost_connection(exc):
                where = (
                    f"DatabaseProjection {self.name!r}: a batch of {len(events)} events at "
                    f"{events[0].position}..{last.position}"
                )
                raise StoreConnectionError(
                    f"{where}: the connection to the database was lost ({exc}); delivering"
                    " the batch again is safe (applied events are recognised and skipped)"
                ) from exc
            raise
        self.already_applied += skipped

    async def apply_batch(self, connection: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        """Apply `events` (in feed order, none applied yet) in `connection`'s transaction:
        each to its `@handles` method in turn. Override it to write a batch in fewer
        statements, e.g. one upsert executed for many rows
        (`await connection.execute(statement, [{...}, {...}])`); raising rolls the batch back.
        """
        for stored in events:
            await self._apply(connection, stored)

    async def _applied(self, connection: AsyncConnection, position: Position) -> bool:
        checkpoint = await self.checkpoints.locked_position_in(connection, self.name)
        return checkpoint is not None and checkpoint >= position

    async def _apply(self, connection: AsyncConnection, stored: StoredEvent) -> None:
        method = self._by_name.get(stored.event_type)
        if method is not None:
            outcome = getattr(self, method)(connection, stored.event)
            if inspect.isawaitable(outcome):
                await outcome
