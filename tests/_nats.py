"""Helpers of the NATS tests: stores and buckets of one test, removed afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from uuid import uuid4

from eventsource import EventRegistry


def unique_name(kind: str) -> str:
    """A stream, bucket or subject-prefix name no other test uses."""
    return f"es_test_{kind}_{uuid4().hex[:12]}"


async def delete_streams(url: str, *names: str) -> None:
    """Delete JetStream streams (a KV bucket `b` is the stream `KV_b`); missing ones are fine."""
    import nats
    from nats.js.errors import NotFoundError

    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for name in names:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def nats_event_store(url: str, registry: EventRegistry) -> AsyncIterator[object]:
    """A `NATSEventStore` on a stream and subject prefix of its own, deleted afterwards."""
    from eventsource import NATSEventStore

    name = unique_name("st")
    store = NATSEventStore(url, stream=name, registry=registry)
    try:
        yield store
    finally:
        await store.close()
        await delete_streams(url, name)
