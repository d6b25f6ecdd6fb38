"""The store service's security: bearer tokens, tenant isolation, TLS.

A client acting for one tenant must never read or write another tenant's events, whatever it
asks for; the status codes are what clients in other languages see.
"""

from __future__ import annotations

from uuid import uuid4

import grpc
import pytest

from eventsource import (
    AuthenticationError,
    EventNotFoundError,
    EventRegistry,
    ExpectedVersion,
    GrpcEventStore,
    InMemoryEventStore,
    PermissionDeniedError,
    ReadOptions,
    StoreConnectionError,
)
from eventsource._proto.eventsource.store.v1 import store_pb2, store_pb2_grpc
from eventsource.testing.events import ItemAdded, contract_registry
from tests.server.conftest import served

pytestmark = pytest.mark.grpc

TENANT_A, TENANT_B = uuid4(), uuid4()
TOKENS = {"token-a": TENANT_A, "token-b": TENANT_B, "token-admin": None}


def client(port: int, **options: object) -> GrpcEventStore:
    return GrpcEventStore(f"127.0.0.1:{port}", registry=contract_registry, **options)  # type: ignore[arg-type]


async def test_calls_without_a_known_token_are_unauthenticated() -> None:
    async with served(InMemoryEventStore(registry=EventRegistry()), tokens=TOKENS) as server:
        assert server.port is not None
        for options in ({}, {"token": "wrong"}, {"token": "TOKEN-A"}):
            async with client(server.port, **options) as anonymous:
                with pytest.raises(AuthenticationError):
                    await anonymous.append_events(uuid4(), "Cart", [ItemAdded(name="x")], 0)
        async with client(server.port, token="token-admin") as admin:
            assert await admin.count_events() == 0  # nothing was stored
        # What other languages see: the status code.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = store_pb2_grpc.EventStoreStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CurrentPosition(store_pb2.CurrentPositionRequest(), timeout=5)
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_tenant_reads_and_writes_only_its_own_events() -> None:
    async with served(InMemoryEventStore(registry=EventRegistry()), tokens=TOKENS) as server:
        assert server.port is not None
        a = client(server.port, token="token-a")
        b = client(server.port, token="token-b")
        admin = client(server.port, token="token-admin")
        stream_a, stream_b = uuid4(), uuid4()
        first = await a.append_events(stream_a, "Cart", [ItemAdded(name="a1")], 0)
        assert first.events[0].tenant_id == TENANT_A  # stamped with the token's tenant
        await a.append_events(stream_a, "Cart", [ItemAdded(name="a2")], ExpectedVersion.ANY)
        await b.append_events(stream_b, "Cart", [ItemAdded(name="b1")], 0)

        # B cannot touch A's stream in any way.
        with pytest.raises(PermissionDeniedError):
            await b.get_events(stream_a)
        with pytest.raises(PermissionDeniedError):
            await b.get_stream_version(stream_a)
        for expected in (2, ExpectedVersion.ANY, ExpectedVersion.STREAM_EXISTS):
            with pytest.raises(PermissionDeniedError):
                await b.append_events(stream_a, "Cart", [ItemAdded(name="intruder")], expected)
        with pytest.raises(PermissionDeniedError):  # an event naming another tenant
            await a.append_events(uuid4(), "Cart", [ItemAdded(name="x", tenant_id=TENANT_B)], 0)
        with pytest.raises(PermissionDeniedError):  # reading another tenant's feed
            await b.count_events(ReadOptions(tenant_id=TENANT_A))
        assert not await b.event_exists(first.events[0].event_id)
        with pytest.raises(EventNotFoundError):
            await b.get_event(first.events[0].event_id)

        # Each feed holds only the tenant's own events; the admin token sees all.
        assert [s.event.name async for s in a.read_all()] == ["a1", "a2"]  # type: ignore[attr-defined]
        assert [s.event.name async for s in b.read_all()] == ["b1"]  # type: ignore[attr-defined]
        assert await admin.count_events() == 3
        assert await admin.get_stream_version(stream_a) == 2

        # A token may narrow itself to its own tenant only; the admin token to any.
        async with client(server.port, token="token-a", tenant_id=TENANT_B) as posing:
            with pytest.raises(PermissionDeniedError):
                await posing.current_position()
        async with client(server.port, token="token-admin", tenant_id=TENANT_B) as scoped:
            assert await scoped.count_events() == 1
        for opened in (a, b, admin):
            await opened.close()


async def test_permission_denied_is_the_status_other_languages_see() -> None:
    async with served(InMemoryEventStore(registry=EventRegistry()), tokens=TOKENS) as server:
        assert server.port is not None
        async with client(server.port, token="token-a") as a:
            stream = uuid4()
            await a.append_events(stream, "Cart", [ItemAdded(name="a1")], 0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = store_pb2_grpc.EventStoreStub(channel)
            request = store_pb2.ReadStreamRequest(aggregate_id=str(stream), from_version=1, limit=9)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ReadStream(
                    request, timeout=5, metadata=(("authorization", "Bearer token-b"),)
                )
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert str(stream) in (caught.value.details() or "")


async def test_tls_with_a_self_signed_certificate(certificate: tuple[bytes, bytes]) -> None:
    cert, key = certificate
    store = InMemoryEventStore(registry=EventRegistry())
    async with served(store, tls_certificate=cert, tls_private_key=key) as server:
        assert server.port is not None
        async with client(server.port, root_certificates=cert) as secure:
            result = await secure.append_events(uuid4(), "Cart", [ItemAdded(name="x")], 0)
            assert result.new_version == 1
        async with client(
            server.port, root_certificates=cert, tls_server_name="localhost"
        ) as by_name:
            assert await by_name.count_events() == 1
        # A client that does not speak TLS, or does not trust the certificate, gets nothing.
        async with client(server.port, reconnect_timeout=0.5, deadline=2) as plain:
            with pytest.raises(StoreConnectionError):
                await plain.count_events()
        async with client(server.port, tls=True, reconnect_timeout=0.5, deadline=2) as untrusting:
            with pytest.raises(StoreConnectionError):
                await untrusting.count_events()
