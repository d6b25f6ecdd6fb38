"""examples/bank_service end to end: the FastAPI app served by uvicorn on a free port, driven
with httpx, on the real PostgreSQL (its own schema) and Redis (its own key prefix)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
import uvicorn
from examples.bank_service.app import app

from eventsource import Position
from eventsource.repositories import PostgreSQLCheckpointRepository

pytestmark = [pytest.mark.postgresql, pytest.mark.redis]


@dataclass
class Service:
    client: httpx.AsyncClient
    server: uvicorn.Server
    task: asyncio.Task[None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def service(
    postgres_url: str,
    schema: str,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Service]:
    monkeypatch.setenv("EVENTSOURCE_EVENT_STORE_URL", f"{postgres_url}?schema={schema}&outbox=true")
    monkeypatch.setenv("EVENTSOURCE_BUS_URL", f"{redis_url}?stream_prefix={redis_prefix}")
    monkeypatch.setenv("EVENTSOURCE_CONSUMER_GROUP", "bank")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            assert not task.done(), "the service did not start"
            await asyncio.sleep(0.05)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        try:
            yield Service(client, server, task)
        finally:
            server.should_exit = True
            await task


async def _open(client: httpx.AsyncClient, owner: str) -> tuple[str, str]:
    opened = await client.post("/accounts", json={"owner": owner})
    assert opened.status_code == 201, opened.text
    return opened.json()["id"], opened.headers["X-Consistency-Token"]


async def test_commands_then_queries_read_their_own_writes(service: Service) -> None:
    client = service.client
    account, token = await _open(client, "ann")
    view = (await client.get(f"/accounts/{account}", params={"after": token})).json()
    assert (view["owner"], Decimal(view["balance"]), view["version"]) == ("ann", 0, 1)

    for n, expected in [(1, "10.00"), (2, "20.00"), (3, "30.00")]:
        deposited = await client.post(f"/accounts/{account}/deposits", json={"amount": "10.00"})
        assert deposited.status_code == 204
        after = deposited.headers["X-Consistency-Token"]
        view = (await client.get(f"/accounts/{account}", params={"after": after})).json()
        assert Decimal(view["balance"]) == Decimal(expected)  # never the balance before
        assert view["version"] == n + 1

    async def deposit_and_read() -> tuple[Position, int]:
        done = await client.post(f"/accounts/{account}/deposits", json={"amount": "1"})
        assert done.status_code == 204
        seen = await client.get(
            f"/accounts/{account}", params={"after": done.headers["X-Consistency-Token"]}
        )
        return Position.parse(done.headers["X-Consistency-Token"]), seen.json()["version"]

    # Concurrent commands conflict and retry; each query still includes its own command.
    results = await asyncio.gather(*(deposit_and_read() for _ in range(12)))
    by_position = sorted(results)
    assert all(seen >= index + 5 for index, (_, seen) in enumerate(by_position))
    final = await client.get(f"/accounts/{account}", params={"after": str(by_position[-1][0])})
    assert (Decimal(final.json()["balance"]), final.json()["version"]) == (Decimal("42"), 16)


async def test_bad_requests_get_clear_answers(service: Service) -> None:
    client = service.client
    account, _ = await _open(client, "bob")
    refused = await client.post(f"/accounts/{account}/withdrawals", json={"amount": "5"})
    assert refused.status_code == 409
    assert "insufficient funds" in refused.json()["detail"]
    assert "X-Consistency-Token" not in refused.headers
    missing = "00000000-0000-0000-0000-000000000001"
    assert (
        await client.post(f"/accounts/{missing}/deposits", json={"amount": "1"})
    ).status_code == 404
    assert (await client.get(f"/accounts/{missing}")).status_code == 404
    assert (await client.get(f"/accounts/{account}", params={"after": "x"})).status_code == 400
    negative = await client.post(f"/accounts/{account}/deposits", json={"amount": "-1"})
    assert negative.status_code == 422


async def test_outbox_reaches_the_bus_health_and_metrics_and_a_clean_shutdown(
    service: Service, postgres_url: str, schema: str, redis_url: str, redis_prefix: str
) -> None:
    import redis.asyncio as aioredis

    client = service.client
    account, _ = await _open(client, "cy")
    for _ in range(4):
        await client.post(f"/accounts/{account}/deposits", json={"amount": "2.50"})
    # Ready once the subscription is live and caught up (503 while it catches up).
    async with asyncio.timeout(20):
        while (health := await client.get("/health")).status_code != 200:
            assert health.json() == {"ready": False}
            await asyncio.sleep(0.1)
    assert health.json() == {"ready": True}
    async with asyncio.timeout(20):
        while (metrics := (await client.get("/metrics")).json())["outbox"]["pending"]:  # noqa: ASYNC110 - polling a service over HTTP
            await asyncio.sleep(0.1)
    assert metrics["repository"]["loads"] >= 5  # one per command, at least
    assert metrics["subscriptions"]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        entries = await redis.xlen(f"{redis_prefix}:events")
    finally:
        await redis.aclose()
    assert entries == 5  # the opening and four deposits, each published once

    # Graceful shutdown: the subscription saves where it got to before the process ends.
    latest = Position.parse(
        (await client.post(f"/accounts/{account}/deposits", json={"amount": "1"})).headers[
            "X-Consistency-Token"
        ]
    )
    await client.get(f"/accounts/{account}", params={"after": str(latest)})
    service.server.should_exit = True
    await service.task
    checkpoints = PostgreSQLCheckpointRepository.from_url(postgres_url, schema=schema)
    try:
        saved = await checkpoints.list()
    finally:
        await checkpoints.close()
    assert [c.position for c in saved] == [latest]
