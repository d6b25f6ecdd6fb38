"""`NATSSnapshotStore`: snapshots in a JetStream key-value bucket, one key per aggregate.

A save is a compare-and-set on the key's revision: it reads the kept snapshot, keeps it when
it is newer (same schema version), and writes only if nobody wrote the key in between (else it
decides again), so a slow writer never rolls a snapshot back.
"""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

from eventsource._internal.nats_kv import KVBucket
from eventsource.exceptions import EventStoreError
from eventsource.snapshots.interface import Snapshot, SnapshotStore

__all__ = ["NATSSnapshotStore"]


def _encode(snapshot: Snapshot) -> bytes:
    return json.dumps(
        {
            "aggregate_id": str(snapshot.aggregate_id),
            "aggregate_type": snapshot.aggregate_type,
            "version": snapshot.version,
            "schema_version": snapshot.schema_version,
            "state": snapshot.state,
            "created_at": snapshot.created_at.isoformat(),
        }
    ).encode()


def _decode(value: bytes, key: str) -> Snapshot:
    try:
        data = json.loads(value)
        return Snapshot(
            UUID(data["aggregate_id"]),
            data["aggregate_type"],
            data["version"],
            data["schema_version"],
            data["state"],
            datetime.fromisoformat(data["created_at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise EventStoreError(
            f"NATS snapshot {key!r} is not a snapshot ({exc!r}); delete it to take a new one"
        ) from exc


class NATSSnapshotStore(SnapshotStore):
    """Snapshots in the bucket `bucket` (created on first use) on the server at `url`."""

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        bucket: str = "eventsource_snapshots",
        replicas: int = 1,
        request_timeout: float = 5.0,
    ) -> None:
        self._kv = KVBucket(
            url,
            bucket,
            owner="NATSSnapshotStore",
            replicas=replicas,
            request_timeout=request_timeout,
        )
        self.bucket = self._kv.bucket

    async def save(self, snapshot: Snapshot) -> None:
        new = _encode(snapshot)
        key = str(snapshot.aggregate_id)

        def decide(current: bytes | None) -> bytes | None:
            if current is not None:
                kept = _decode(current, key)
                if kept.schema_version == snapshot.schema_version and (
                    kept.version > snapshot.version
                ):
                    return None  # the kept one is newer: never roll back
            return new

        await self._kv.change(key, decide)

    async def get(self, aggregate_id: UUID, aggregate_type: str | None = None) -> Snapshot | None:
        key = str(aggregate_id)
        entry = await self._kv.get(key)
        if entry is None:
            return None
        snapshot = _decode(entry[0], key)
        if aggregate_type and snapshot.aggregate_type != aggregate_type:
            return None
        return snapshot

    async def delete(self, aggregate_id: UUID) -> bool:
        key = str(aggregate_id)
        while True:
            entry = await self._kv.get(key)
            if entry is None:
                return False
            if await self._kv.delete(key, entry[1]):
                return True

    async def invalidate(
        self, aggregate_type: str, *, schema_version_below: int | None = None
    ) -> int:
        forgotten = 0
        for key in await self._kv.keys():
            while True:
                entry = await self._kv.get(key)
                if entry is None:
                    break
                snapshot = _decode(entry[0], key)
                if snapshot.aggregate_type != aggregate_type or (
                    schema_version_below is not None
                    and snapshot.schema_version >= schema_version_below
                ):
                    break
                if await self._kv.delete(key, entry[1]):
                    forgotten += 1
                    break
        return forgotten

    async def close(self) -> None:
        await self._kv.close()
