"""Type aliases shared by every layer of the library."""

from __future__ import annotations

from typing import TypeAlias, TypeVar
from uuid import UUID

from pydantic import BaseModel

__all__ = [
    "AggregateId",
    "CausationId",
    "CorrelationId",
    "EventId",
    "GlobalPosition",
    "StreamPosition",
    "TState",
    "TenantId",
    "Version",
]

TState = TypeVar("TState", bound=BaseModel)
"""The pydantic model holding an aggregate's state."""

AggregateId: TypeAlias = UUID
EventId: TypeAlias = UUID
TenantId: TypeAlias = UUID
CorrelationId: TypeAlias = UUID
CausationId: TypeAlias = UUID
Version: TypeAlias = int
"""Version of an aggregate stream: the number of events in it (0 = no events)."""

StreamPosition: TypeAlias = int
"""Position of an event within its aggregate stream: its `aggregate_version` (1 = first)."""
GlobalPosition: TypeAlias = int
"""Position of an event in a store's global feed (what checkpoints record)."""
