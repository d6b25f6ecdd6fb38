"""nats:// database URLs: the NATS event store, snapshots and checkpoints from one URL."""

from __future__ import annotations

from uuid import uuid4

import pytest

from eventsource import ConfigurationError
from eventsource.config import (
    create_checkpoint_repository,
    create_dlq_repository,
    create_event_store,
    create_snapshot_store,
    parse_database_url,
)
from eventsource.snapshots import Snapshot
from eventsource.stores.interface import Position
from eventsource.testing.events import ItemAdded, contract_registry
from tests._nats import delete_streams, unique_name

pytestmark = pytest.mark.nats


def test_a_nats_url_names_the_stream_and_buckets_by_prefix() -> None:
    database = parse_database_url("nats://127.0.0.1:4222?prefix=shop_&replicas=1")
    assert (database.backend, database.prefix, database.replicas) == ("nats", "shop_", 1)
    assert database.driver_url == "nats://127.0.0.1:4222"
    assert database.description == "NATS JetStream 127.0.0.1:4222, stream shop_events"
    with pytest.raises(ConfigurationError, match="no query options or keywords named"):
        parse_database_url("nats://127.0.0.1:4222?schema=x")


def test_what_nats_does_not_provide_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="dead letters"):
        create_dlq_repository("nats://127.0.0.1:4222")
    with pytest.raises(ConfigurationError, match="letters, digits"):
        create_event_store("nats://127.0.0.1:4222?prefix=a.b")


async def test_store_snapshots_and_checkpoints_from_one_url(nats_url: str) -> None:
    prefix = unique_name("cfg") + "_"
    url = f"{nats_url}?prefix={prefix}&duplicate_window=30"
    store = create_event_store(url, registry=contract_registry)
    snapshots, checkpoints = create_snapshot_store(url), create_checkpoint_repository(url)
    try:
        cart = uuid4()
        result = await store.append_events(cart, "Cart", [ItemAdded(name="a")], 0)
        await snapshots.save(Snapshot(cart, "Cart", 1, 1, "{}"))
        await checkpoints.save("carts", result.positions[0])
        assert store.stream == f"{prefix}events"  # type: ignore[attr-defined]
        assert (await snapshots.get(cart)) is not None
        kept = await checkpoints.get("carts")
        assert kept is not None
        assert kept.position == result.positions[0] > Position.START
    finally:
        for closing in (store, snapshots, checkpoints):
            await closing.close()
        await delete_streams(
            nats_url, f"{prefix}events", f"KV_{prefix}snapshots", f"KV_{prefix}checkpoints"
        )
