"""`SagaStatusProjection`: a read model of saga instances by status, fed by the global feed.

Operators query it for running, failed, compensated or parked (COMPENSATION_FAILED) sagas:
`await summaries.query(status="COMPENSATION_FAILED")`. Each summary keeps the stream version
it was built from and skips older or repeated events, so a redelivery changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel

from eventsource.events.base import DomainEvent
from eventsource.readmodels.projection import ReadModelProjection
from eventsource.sagas.events import (
    SagaCancelRequested,
    SagaCompensated,
    SagaCompensationParked,
    SagaCompensationRetried,
    SagaCompensationStarted,
    SagaCompleted,
    SagaFailed,
    SagaStarted,
    SagaStepFailed,
    SagaStepsStarted,
)
from eventsource.sagas.state import SagaStatus
from eventsource.stores.interface import StoredEvent

__all__ = ["SagaStatusProjection", "SagaSummary"]


class SagaSummary(BaseModel):
    id: UUID
    saga_name: str = ""
    status: SagaStatus = SagaStatus.PENDING
    reason: str | None = None
    parked_step: str | None = None
    cancel_requested: bool = False
    version: int = 0
    updated_at: datetime | None = None


_STATUS = {
    SagaStarted.type_name(): SagaStatus.PENDING,
    SagaStepsStarted.type_name(): SagaStatus.RUNNING,
    SagaCompleted.type_name(): SagaStatus.COMPLETED,
    SagaFailed.type_name(): SagaStatus.FAILED,
    SagaStepFailed.type_name(): SagaStatus.FAILED,
    SagaCompensationStarted.type_name(): SagaStatus.COMPENSATING,
    SagaCompensationRetried.type_name(): SagaStatus.COMPENSATING,
    SagaCompensationParked.type_name(): SagaStatus.COMPENSATION_FAILED,
    SagaCompensated.type_name(): SagaStatus.COMPENSATED,
}


class SagaStatusProjection(ReadModelProjection[SagaSummary]):
    """Keeps one `SagaSummary` per saga instance in a `ReadModelRepository[SagaSummary]`."""

    name = "eventsource.saga-status"

    def interested_in(self) -> frozenset[str] | None:
        return frozenset({*_STATUS, SagaCancelRequested.type_name()})

    async def handle(self, stored: StoredEvent | DomainEvent) -> None:
        event = stored.event if isinstance(stored, StoredEvent) else stored
        summary = await self.get_or_create(event.aggregate_id)
        if event.aggregate_version <= summary.version:
            return  # seen already
        update: dict[str, object] = {"version": event.aggregate_version}
        update["updated_at"] = event.occurred_at
        if isinstance(event, SagaStarted):
            update["saga_name"] = event.saga_name
        if isinstance(event, SagaCancelRequested):
            update["cancel_requested"] = True
        if isinstance(event, SagaFailed):
            update["reason"] = event.reason
        if isinstance(event, SagaStepFailed):
            update["reason"] = "; ".join(f"step {s!r}: {e}" for s, e in event.errors.items())
        if isinstance(event, SagaCompensationParked):
            update["parked_step"] = event.step
            update["reason"] = event.error
        if isinstance(event, SagaCompensationRetried):
            update["parked_step"] = None
        status = _STATUS.get(event.event_type)
        if status is not None:
            update["status"] = status
        await self.models.save(summary.model_copy(update=update))
