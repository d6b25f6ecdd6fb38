"""The store service's wire behaviour: status codes and error details, message size limits,
health and reflection, and a client that reconnects to a restarted server."""

from __future__ import annotations

import asyncio
import json
import socket
from uuid import uuid4

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eventsource import (
    EventRegistry,
    GrpcEventStore,
    GrpcStoreServer,
    InMemoryEventStore,
    MessageTooLargeError,
    OptimisticLockError,
    ReadOptions,
    StoreConnectionError,
)
from eventsource._proto.eventsource.store.v1 import store_pb2, store_pb2_grpc
from eventsource.testing.events import ItemAdded, contract_registry
from tests.server.conftest import served

pytestmark = pytest.mark.grpc

SERVICE = "eventsource.store.v1.EventStore"


def client(port: int, **options: object) -> GrpcEventStore:
    return GrpcEventStore(f"127.0.0.1:{port}", registry=contract_registry, **options)  # type: ignore[arg-type]


async def test_a_version_conflict_is_aborted_with_the_error_described() -> None:
    async with served(InMemoryEventStore(registry=EventRegistry())) as server:
        assert server.port is not None
        stream = uuid4()
        async with client(server.port) as store:
            await store.append_events(stream, "Cart", [ItemAdded(name="x")], 0)
            with pytest.raises(OptimisticLockError) as typed:
                await store.append_events(stream, "Cart", [ItemAdded(name="y")], 0)
            assert (typed.value.aggregate_id, typed.value.actual_version) == (stream, 1)
        # Another language sees ABORTED and the JSON description in the trailing metadata.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = store_pb2_grpc.EventStoreStub(channel)
            request = store_pb2.AppendRequest(
                aggregate_id=str(stream),
                aggregate_type="Cart",
                expected_version=0,
                events=[store_pb2.EventData(event_type="ItemAdded", payload='{"name": "z"}')],
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Append(request, timeout=5)
            assert caught.value.code() is grpc.StatusCode.ABORTED
            described = dict(caught.value.trailing_metadata())["eventsource-error"]
            assert json.loads(described)["type"] == "OptimisticLockError"
            assert json.loads(described)["actual_version"] == 1
            # A client of another language may send only its own fields.
            request.expected_version = 1
            reply = await stub.Append(request, timeout=5)
            assert reply.new_version == 2
        async with client(server.port) as store:
            (_, third) = (await store.get_events(stream)).events[:2]
            assert third.name == "z"  # type: ignore[attr-defined]


async def test_messages_over_the_size_limits_fail_clearly_and_store_nothing() -> None:
    backing = InMemoryEventStore(registry=EventRegistry())
    big = ItemAdded(name="x" * 100_000)
    async with served(backing, max_message_size=64 * 1024) as server:
        assert server.port is not None
        stream = uuid4()
        async with client(server.port) as store:  # the server refuses the request
            with pytest.raises(MessageTooLargeError):
                await store.append_events(stream, "Cart", [big], 0)
            assert await store.get_stream_version(stream) == 0
        async with client(server.port, max_message_size=64 * 1024) as store:  # never sent
            with pytest.raises(MessageTooLargeError, match=str(stream)):
                await store.append_events(stream, "Cart", [big], 0)
            # Many events that fit one by one arrive in pages under the limit.
            many = [ItemAdded(name=f"{n}" + "y" * 10_000) for n in range(30)]
            for n in range(0, 30, 5):
                await store.append_events(stream, "Cart", many[n : n + 5], n)
            assert [s.event_id async for s in store.read_all()] == [e.event_id for e in many]
            assert len((await store.get_events(stream)).events) == 30
    # A client with a smaller limit than the server's gets pages cut to its own limit.
    async with (
        served(backing) as roomy,
        client(roomy.port or 0, max_message_size=64 * 1024) as small,
    ):
        assert len([s async for s in small.read_all(ReadOptions(event_types=["ItemAdded"]))]) == 30
        with pytest.raises(MessageTooLargeError, match="client"):
            await small.append_events(uuid4(), "Cart", [big], 0)
    # A stored event larger than what a server may send is named in the error.
    await backing.append_events(uuid4(), "Cart", [big], 0)
    async with served(backing, max_message_size=64 * 1024) as server:
        assert server.port is not None
        async with client(server.port) as store:
            with pytest.raises(MessageTooLargeError, match=str(big.event_id)):
                await store.get_event(big.event_id)


async def test_health_and_reflection() -> None:
    async with (
        served(InMemoryEventStore(registry=EventRegistry()), tokens={"t": None}) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        services = set()
        async for reply in reflection.ServerReflectionInfo(iter([request]), timeout=5):
            services |= {s.name for s in reply.list_services_response.service}
        assert SERVICE in services
        assert "grpc.health.v1.Health" in services


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_client_reconnects_to_a_restarted_server() -> None:
    backing = InMemoryEventStore(registry=EventRegistry())
    port = _free_port()
    store = client(port, reconnect_timeout=20)
    try:
        first = GrpcStoreServer(backing)
        await first.start(f"127.0.0.1:{port}")
        stream = uuid4()
        await store.append_events(stream, "Cart", [ItemAdded(name="before")], 0)
        await first.close(grace=0)
        second = GrpcStoreServer(backing)
        await second.start(f"127.0.0.1:{port}")
        try:
            result = await store.append_events(stream, "Cart", [ItemAdded(name="after")], 1)
            assert result.new_version == 2
        finally:
            await second.close(grace=0)
        # No server at all: after reconnect_timeout the error says so.
        store.reconnect_timeout = 0.3
        with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}"):
            await store.get_stream_version(stream)
    finally:
        await store.close()


def test_a_call_the_server_ended_is_transient_not_a_failure() -> None:
    """A server shutting down ends the calls in flight with CANCELLED (the client's own
    cancellation raises CancelledError instead): a subscription or a retry policy must see
    an error worth another try, as for UNAVAILABLE, not a failed store."""
    from eventsource.exceptions import TransientStoreError
    from eventsource.stores._grpc_wire import error_from_status

    error = error_from_status(grpc.StatusCode.CANCELLED, "CANCELLED", None)
    assert isinstance(error, TransientStoreError)
    assert "retrying it with the same events is safe" in str(error)


async def test_a_subscription_over_the_client_outlives_a_server_restart() -> None:
    """The library's own subscriptions run over `GrpcEventStore`: a service down longer than
    the client's reconnect_timeout makes the subscription reconnect, and when the service is
    back every event arrives exactly once, in order."""
    from eventsource import (
        InMemoryCheckpointRepository,
        InMemoryDLQRepository,
        StoredEvent,
        SubscriptionConfig,
        SubscriptionManager,
    )

    backing = InMemoryEventStore(registry=EventRegistry())
    port = _free_port()
    seen: list[StoredEvent] = []

    async def handler(stored: StoredEvent) -> None:
        seen.append(stored)

    written = [ItemAdded(name=f"{n}") for n in range(6)]
    server = GrpcStoreServer(backing)
    await server.start(f"127.0.0.1:{port}")
    store = client(port, reconnect_timeout=0.2, deadline=2)
    config = SubscriptionConfig(poll_interval=0.1)
    try:
        async with SubscriptionManager(
            store, InMemoryCheckpointRepository(), InMemoryDLQRepository(), config=config
        ) as manager:
            subscription = manager.subscribe(handler, name="audit")
            first = await store.append_events(uuid4(), "Cart", written[:3], 0)
            await subscription.wait_for(first.last_position, timeout=20)
            await server.close(grace=0)
            later = await backing.append_events(uuid4(), "Cart", written[3:], 0)
            await asyncio.sleep(1.0)  # the subscription's reads fail meanwhile
            server = GrpcStoreServer(backing)
            await server.start(f"127.0.0.1:{port}")
            await subscription.wait_for(later.last_position, timeout=30)
        assert [s.event_id for s in seen] == [e.event_id for e in written]
    finally:
        await store.close()
        await server.close(grace=0)
