"""Blocking facades over the async API for synchronous callers (Django or Flask views,
scripts): `SyncEventStoreAdapter` and `SyncAggregateRepository`, both running the async code on
one private event loop owned by the adapter."""

from eventsource.exceptions import SyncAdapterError
from eventsource.sync.adapter import SyncEventStoreAdapter
from eventsource.sync.repository import SyncAggregateRepository

__all__ = ["SyncAdapterError", "SyncAggregateRepository", "SyncEventStoreAdapter"]
