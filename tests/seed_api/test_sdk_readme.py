"""The event sourcing SDK's README (seed 004), run as written: its "Define Events", "Create
Aggregates", "Use with Repository" and "Use with gRPC (Production)" blocks, with top-level
await, over the in-memory client and over a store service on a loopback port.

Two things the README leaves to its surroundings are supplied here: the SDK's package name
(`event_sourcing` is this library's `eventsource.sdk`) and `AccountEvent` (the README's union
of the account's events; it has one). The gRPC block's host and port are the test server's.
The README's classes join the default registry once, when this module is imported.
"""

from __future__ import annotations

import ast
import json
import sys
from typing import Any
from uuid import UUID

import pytest

import eventsource.sdk
from eventsource import (
    AggregateNotFoundError,
    EventRegistry,
    GrpcStoreServer,
    InMemoryEventStore,
    UnhandledEventError,
)

DEFINE_EVENTS = """
from event_sourcing import DomainEvent

class AccountCredited(DomainEvent):
    event_type = "AccountCredited"
    amount: float
    balance: float
"""

CREATE_AGGREGATES = """
from event_sourcing import AggregateRoot, event_sourcing_handler

class AccountAggregate(AggregateRoot[AccountEvent]):
    def __init__(self) -> None:
        super().__init__()
        self.balance = 0.0
    
    def get_aggregate_type(self) -> str:
        return "Account"
    
    def credit(self, amount: float) -> None:
        if amount <= 0:
            raise ValueError("Amount must be positive")
        self._raise_event(AccountCredited(
            amount=amount,
            balance=self.balance + amount
        ))
    
    @event_sourcing_handler("AccountCredited")
    def on_credited(self, event: AccountCredited) -> None:
        self.balance = event.balance
"""  # noqa: W293 - the README's blank lines keep their indentation

USE_WITH_REPOSITORY = """
from event_sourcing import RepositoryFactory, EventStoreClientFactory

# For testing with in-memory client
client = EventStoreClientFactory.create_memory_client()
await client.connect()

repo = RepositoryFactory(client).create_repository(
    AccountAggregate,
    "Account"
)

# Create and save
account = AccountAggregate()
account.credit(100.0)
await repo.save(account)

# Load and modify
loaded = await repo.load(account.id)
loaded.credit(50.0)
await repo.save(loaded)
"""

USE_WITH_GRPC = """
from event_sourcing import RepositoryFactory, EventStoreClientFactory

# Connect to gRPC event store
client = EventStoreClientFactory.create_grpc_client(
    host="eventstore.example.com",
    port=50051,
    tenant_id="my-tenant"
)
await client.connect()

# Use the same repository pattern
repo = RepositoryFactory(client).create_repository(
    AccountAggregate,
    "Account"
)

# All operations work the same
account = AccountAggregate()
account.credit(100.0)
await repo.save(account)
"""


def _readme_namespace() -> dict[str, Any]:
    sys.modules["event_sourcing"] = eventsource.sdk
    try:
        namespace: dict[str, Any] = {"__name__": "sdk_readme"}
        exec(DEFINE_EVENTS, namespace)
        namespace["AccountEvent"] = namespace["AccountCredited"]
        exec(CREATE_AGGREGATES, namespace)
        return namespace
    finally:
        del sys.modules["event_sourcing"]


README = _readme_namespace()


async def _run(block: str, namespace: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a README block with its top-level awaits."""
    monkeypatch.setitem(sys.modules, "event_sourcing", eventsource.sdk)
    code = compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if result is not None:
        await result


async def test_the_repository_example_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = dict(README)
    await _run(USE_WITH_REPOSITORY, namespace, monkeypatch)
    account, loaded, repo = namespace["account"], namespace["loaded"], namespace["repo"]
    assert isinstance(account.id, UUID)
    assert loaded.id == account.id
    assert loaded.balance == 150.0
    again = await repo.load(account.id)
    assert (again.balance, again.version) == (150.0, 2)
    events = (await namespace["client"].get_events(account.id)).events
    assert [(e.event_type, e.aggregate_type, e.balance) for e in events] == [
        ("AccountCredited", "Account", 100.0),
        ("AccountCredited", "Account", 150.0),
    ]
    with pytest.raises(ValueError, match="positive"):
        again.credit(0)
    with pytest.raises(AggregateNotFoundError):
        await repo.load(namespace["AccountAggregate"]().id)


@pytest.mark.grpc
async def test_the_grpc_example_against_a_service(monkeypatch: pytest.MonkeyPatch) -> None:
    backing = InMemoryEventStore(registry=EventRegistry())
    async with GrpcStoreServer(backing) as server:
        port = await server.start("127.0.0.1:0")
        block = USE_WITH_GRPC.replace('"eventstore.example.com"', '"127.0.0.1"').replace(
            "port=50051", f"port={port}"
        )
        namespace = dict(README)
        await _run(block, namespace, monkeypatch)
        client, account = namespace["client"], namespace["account"]
        try:
            loaded = await namespace["repo"].load(account.id)
            assert loaded.balance == 100.0
            (stored,) = [s async for s in backing.read_stream(account.id)]  # undecoded
            tenant = json.loads(stored.payload)["tenant_id"]
            assert UUID(tenant) == eventsource.sdk.tenant_uuid("my-tenant")
            assert stored.aggregate_type == "Account"
        finally:
            await client.close()


def test_handlers_are_named_by_event_type() -> None:
    aggregate_class = README["AccountAggregate"]
    account = aggregate_class()
    assert account.get_aggregate_type() == "Account"
    applied = account._raise_event(README["AccountCredited"](amount=5.0, balance=5.0))
    assert (applied.aggregate_id, applied.aggregate_version) == (account.id, 1)
    assert account.balance == 5.0

    class Silent(eventsource.sdk.AggregateRoot[Any]):
        pass

    with pytest.raises(UnhandledEventError, match="AccountCredited"):
        Silent()._raise_event(README["AccountCredited"](amount=1.0, balance=1.0))
    assert eventsource.sdk.tenant_uuid(str(account.id)) == account.id
