"""`DatabaseProjection`: read-model writes and the checkpoint commit in one transaction.

When the read model lives in the database that keeps the projection's checkpoint, each event's
effect and the checkpoint's move commit together: a crash rolls both back, the event is
delivered again, and its effect lands once. Exactly-once effects, not just at-least-once
delivery.

One case needs more than a shared transaction: the connection dies while the COMMIT is on its
way, after the server committed but before its reply arrived. The client cannot tell that from
a rollback, and the subscription delivers the event again. Such an event is marked "in doubt";
its next delivery first reads the checkpoint with its row locked (a COMMIT still in flight
finishes first) and skips the handler when the checkpoint is at or past the event; its
checkpoint write must then move the checkpoint, or the transaction rolls back. Other
deliveries pay nothing for this.
"""

from __future__ import annotations

import inspect
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

    async def locked_position_in(self, connection: AsyncConnection, name: str) -> Position | None:
        """The checkpoint's position read in `connection`'s transaction, its row locked until
        that transaction ends (a transaction still committing a move finishes first)."""
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
    """Rolls back a delivery whose event turned out to be applied already."""


class DatabaseProjection(DeclaredHandlers, Projection):
    """A projection whose `@handles` methods get `(connection, event)`: a SQLAlchemy
    `AsyncConnection` in a transaction that also moves the projection's checkpoint.

    Build it with the engine of the read model's database and checkpoints kept in that same
    database. Subscribed to a `SubscriptionManager`, it is its own checkpoint store, so the
    subscription resumes exactly where the last committed transaction left off. A lost
    connection raises `StoreConnectionError` (the subscription retries); an event whose COMMIT
    reply was lost is recognised on its retry and not applied again (`already_applied` counts
    those).
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

    async def _applied(self, connection: AsyncConnection, position: Position) -> bool:
        checkpoint = await self.checkpoints.locked_position_in(connection, self.name)
        return checkpoint is not None and checkpoint >= position

    async def _apply(self, connection: AsyncConnection, stored: StoredEvent) -> None:
        method = self._by_name.get(stored.event_type)
        if method is not None:
            outcome = getattr(self, method)(connection, stored.event)
            if inspect.isawaitable(outcome):
                await outcome
