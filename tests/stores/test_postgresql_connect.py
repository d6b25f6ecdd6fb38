"""Connecting to PostgreSQL from a URL as managed providers hand them out: libpq forms parsed by
SQLAlchemy's `make_url`, TLS options passed to asyncpg, and a connect timeout that ends in a
typed error naming the server.

Each test uses its own schema, dropped afterwards.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from uuid import uuid4

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from eventsource import StoreConnectionError
from eventsource.config import ConfigurationError, create_event_store, parse_database_url
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.testing.events import ItemAdded, contract_registry

pytestmark = pytest.mark.postgresql


async def _roundtrip(url: str, schema: str) -> int:
    """Create the schema, append one event and read the stream's version back."""
    async with PostgreSQLEventStore.from_url(
        url, schema=schema, registry=contract_registry
    ) as store:
        await store.create_schema()
        stream = uuid4()
        await store.append_events(stream, "Cart", [ItemAdded(name="x", quantity=1)], 0)
        return await store.get_stream_version(stream)


async def _server_setting(postgres_url: str, name: str) -> str:
    conn = await asyncpg.connect(postgres_url)
    try:
        return str(await conn.fetchval(f"SHOW {name}"))
    finally:
        await conn.close()


async def test_a_url_without_host_reaches_the_server_by_its_socket(
    postgres_url: str, schema: str
) -> None:
    directory = (await _server_setting(postgres_url, "unix_socket_directories")).split(",")[0]
    test_url = make_url(postgres_url)
    # postgresql:///db is the libpq form a hand-written URL rebuild used to turn into
    # postgresql:/db; the socket directory comes as the `host` query option.
    url = f"postgresql:///{test_url.database}?host={directory.strip()}"
    if test_url.username:
        url += f"&user={test_url.username}"
    assert parse_database_url(url).driver_url.startswith("postgresql:///")
    assert await _roundtrip(url, schema) == 1


async def test_libpq_tls_options_reach_the_driver(postgres_url: str, schema: str) -> None:
    ssl_on = await _server_setting(postgres_url, "ssl") == "on"
    assert await _roundtrip(_with(postgres_url, "sslmode=disable"), schema) == 1
    assert await _roundtrip(_with(postgres_url, "sslmode=prefer"), schema) == 1
    if ssl_on:
        assert await _roundtrip(_with(postgres_url, "sslmode=require"), schema) == 1
    else:
        # Refused for the right reason: the server would not upgrade, not a TypeError from
        # an unknown keyword argument.
        with pytest.raises(StoreConnectionError, match="SSL"):
            await _roundtrip(_with(postgres_url, "sslmode=require&connect_timeout=5"), schema)


async def test_application_name_and_driver_options_from_the_url(
    postgres_url: str, schema: str
) -> None:
    name = f"es-connect-{uuid4().hex[:8]}"
    url = _with(postgres_url, f"application_name={name}&statement_cache_size=0")
    async with PostgreSQLEventStore.from_url(url, schema=schema) as store:
        await store.create_schema()
        async with store.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            assert await raw.fetchval("SHOW application_name") == name
            assert raw._stmt_cache.get_max_size() == 0


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


async def test_an_unresponsive_server_is_a_typed_error_naming_it(silent_server: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{silent_server}/test?connect_timeout=0.2"
    store = PostgreSQLEventStore.from_url(url, schema="unused", retry_timeout=0)
    try:
        with pytest.raises(StoreConnectionError) as caught:
            await store.get_stream_version(uuid4())
    finally:
        await store.close()
    message = str(caught.value)
    assert f"127.0.0.1:{silent_server}" in message
    assert "0.2 s" in message
    assert "connect_timeout" in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://h/db?connect_timeout=soon", "not a number"),
        ("postgresql://h/db?connect_timeout=0", "connect_timeout must be > 0"),
        ("postgresql://u:secret@h:port/db", "not a valid PostgreSQL URL"),
    ],
)
def test_bad_connection_options_are_configuration_errors(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason) as caught:
        create_event_store(url)
    assert "secret" not in str(caught.value)


def _with(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"
