"""`DatabaseProjection`: read-model writes and the checkpoint commit in one transaction.

When the read model lives in the database that keeps the projection's checkpoint, each event's
effect and the checkpoint's move commit together: a crash rolls both back, the event is
delivered again, and its effect lands once. Exactly-once effects, not just at-least-once
delivery.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from eventsource.projections.base import DeclaredHandlers, Projection
from eventsource.protocols import CheckpointStore
from eventsource.stores.interface import Position, StoredEvent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["DatabaseProjection", "TransactionalCheckpoints"]


class TransactionalCheckpoints(CheckpointStore, Protocol):
    """Checkpoints that can also be saved inside a caller's transaction
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
    ) -> None: ...


class DatabaseProjection(DeclaredHandlers, Projection):
    """A projection whose `@handles` methods get `(connection, event)`: a SQLAlchemy
    `AsyncConnection` in a transaction that also moves the projection's checkpoint.

    Build it with the engine of the read model's database and checkpoints kept in that same
    database. Subscribed to a `SubscriptionManager`, it is its own checkpoint store, so the
    subscription resumes exactly where the last committed transaction left off.
    """

    def __init__(self, engine: AsyncEngine, checkpoints: TransactionalCheckpoints) -> None:
        self.engine = engine
        self.checkpoints = checkpoints

    @property
    def checkpoint_store(self) -> TransactionalCheckpoints:
        return self.checkpoints

    def interested_in(self) -> frozenset[str] | None:
        return frozenset(self._by_name)

    async def handle(self, stored: StoredEvent) -> None:
        method = self._by_name.get(stored.event_type)
        async with self.engine.begin() as connection:
            if method is not None:
                outcome = getattr(self, method)(connection, stored.event)
                if inspect.isawaitable(outcome):
                    await outcome
            await self.checkpoints.save_in(
                connection,
                self.name,
                stored.position,
                event_id=stored.event_id,
                event_type=stored.event_type,
            )
