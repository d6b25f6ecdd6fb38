"""`NATSCheckpointRepository`: subscription checkpoints in a JetStream key-value bucket.

One key per checkpoint name (names are encoded into valid keys and back). A save is a
compare-and-set on the key's revision: a position at or before the kept one changes nothing,
and a writer that lost the race decides again on what the winner wrote, so a stale worker
never moves a checkpoint back and concurrent saves of one position count once.
"""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

from eventsource._internal.clock import utc_now
from eventsource._internal.nats_kv import KVBucket, decode_key, encode_key
from eventsource.exceptions import CheckpointError
from eventsource.repositories.interface import Checkpoint, CheckpointRepository
from eventsource.stores.interface import Position

__all__ = ["NATSCheckpointRepository"]


def _encode(checkpoint: Checkpoint) -> bytes:
    return json.dumps(
        {
            "position": str(checkpoint.position),
            "event_id": None if checkpoint.event_id is None else str(checkpoint.event_id),
            "event_type": checkpoint.event_type,
            "events_processed": checkpoint.events_processed,
            "updated_at": checkpoint.updated_at.isoformat(),
        }
    ).encode()


def _decode(name: str, value: bytes) -> Checkpoint:
    try:
        data = json.loads(value)
        return Checkpoint(
            name=name,
            position=Position.parse(data["position"]),
            event_id=None if data["event_id"] is None else UUID(data["event_id"]),
            event_type=data["event_type"],
            events_processed=data["events_processed"],
            updated_at=datetime.fromisoformat(data["updated_at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"the NATS checkpoint of {name!r} is unreadable ({exc!r}); reset it"
        ) from exc


class NATSCheckpointRepository(CheckpointRepository):
    """Checkpoints in the bucket `bucket` (created on first use) on the server at `url`."""

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        bucket: str = "eventsource_checkpoints",
        replicas: int = 1,
        request_timeout: float = 5.0,
    ) -> None:
        self._kv = KVBucket(
            url,
            bucket,
            owner="NATSCheckpointRepository",
            replicas=replicas,
            request_timeout=request_timeout,
        )
        self.bucket = self._kv.bucket

    async def get(self, name: str) -> Checkpoint | None:
        entry = await self._kv.get(encode_key(name))
        return None if entry is None else _decode(name, entry[0])

    async def save(
        self,
        name: str,
        position: Position,
        *,
        event_id: UUID | None = None,
        event_type: str | None = None,
        processed: int = 1,
    ) -> None:
        def decide(current: bytes | None) -> bytes | None:
            count = 0
            if current is not None:
                kept = _decode(name, current)
                if position <= kept.position:
                    return None  # a stale worker: never move back
                count = kept.events_processed
            return _encode(
                Checkpoint(name, position, event_id, event_type, count + processed, utc_now())
            )

        await self._kv.change(encode_key(name), decide)

    async def reset(self, name: str, position: Position | None = None) -> None:
        key = encode_key(name)
        if position is None:
            if await self._kv.get(key) is not None:
                await self._kv.delete(key)
            return
        await self._kv.put(key, _encode(Checkpoint(name, position, None, None, 0, utc_now())))

    async def list(self) -> list[Checkpoint]:
        found: list[Checkpoint] = []
        for key in await self._kv.keys():
            name = decode_key(key)
            checkpoint = await self.get(name)
            if checkpoint is not None:
                found.append(checkpoint)
        return sorted(found, key=lambda checkpoint: checkpoint.name)

    async def close(self) -> None:
        await self._kv.close()
