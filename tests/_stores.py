"""Event stores of every backend for tests that run the same scenario on each of them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest

from eventsource import EventRegistry, EventStore, InMemoryEventStore

STORE_KINDS = [
    "memory",
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("nats", marks=pytest.mark.nats),
    pytest.param("grpc", marks=pytest.mark.grpc),
]
"""Parameters for a `store` fixture: `@pytest.fixture(params=STORE_KINDS)`."""

OUTBOX_STORE_KINDS = [kind for kind in STORE_KINDS if getattr(kind, "values", (kind,))[0] != "nats"]
"""The kinds whose store writes a transactional outbox (NATS has none)."""


@contextlib.asynccontextmanager
async def open_event_store(
    request: pytest.FixtureRequest, registry: EventRegistry, tmp_path: Path
) -> AsyncIterator[EventStore]:
    """An empty store of the kind `request.param` names (PostgreSQL: a schema of its own,
    dropped afterwards; NATS: a stream of its own, deleted afterwards; gRPC: a client of a
    service started for the test)."""
    kind = request.param
    if kind == "memory":
        yield InMemoryEventStore(registry=registry)
    elif kind == "grpc":
        # A client of the store service on a loopback port, an in-memory store behind it
        # that decodes nothing (the service handles events as JSON).
        from eventsource import GrpcEventStore, GrpcStoreServer

        async with GrpcStoreServer(InMemoryEventStore(registry=EventRegistry())) as server:
            port = await server.start("127.0.0.1:0")
            async with GrpcEventStore(f"127.0.0.1:{port}", registry=registry) as client:
                yield client
    elif kind == "sqlite":
        from eventsource import SQLiteEventStore

        async with SQLiteEventStore(tmp_path / "events.db", registry=registry) as sqlite_store:
            yield sqlite_store
    elif kind == "nats":
        from tests._nats import nats_event_store

        async with nats_event_store(request.getfixturevalue("nats_url"), registry) as nats_store:
            yield nats_store  # type: ignore[misc]
    else:
        import asyncpg

        from eventsource import PostgreSQLEventStore

        url = request.getfixturevalue("postgres_url")
        schema = f"es_t_{uuid4().hex[:12]}"
        async with PostgreSQLEventStore.from_url(url, schema=schema, registry=registry) as pg:
            await pg.create_schema()
            try:
                yield pg
            finally:
                conn = await asyncpg.connect(url)
                try:
                    await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
                finally:
                    await conn.close()
