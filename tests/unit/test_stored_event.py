"""`StoredEvent`: built from an event, or from a stored row that decodes on first access."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from eventsource import EventRegistry, Position, StoredEvent
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import EventTypeNotFoundError, SerializationError
from eventsource.testing.events import ItemAdded, UnregisteredEvent

NOW = datetime.now(UTC)


def _codec() -> EventCodec:
    registry = EventRegistry()
    registry.register(ItemAdded)
    return EventCodec(registry)


def _row(payload: str, event_type: str = "ItemAdded", **ids: object) -> StoredEvent:
    return StoredEvent.from_row(
        _codec(),
        Position(0, 1),
        NOW,
        ids.get("event_id"),  # type: ignore[arg-type]
        event_type,
        1,
        ids.get("aggregate_id"),  # type: ignore[arg-type]
        ids.get("aggregate_type"),  # type: ignore[arg-type]
        1,
        payload,
    )


def test_built_from_an_event_as_before() -> None:
    event = ItemAdded(name="x", aggregate_id=uuid4(), aggregate_type="Cart", aggregate_version=3)
    stored = StoredEvent(event, Position(1, 2), NOW)
    assert stored.decoded
    assert stored.envelope_complete
    assert (stored.event, stored.position, stored.recorded_at) == (event, Position(1, 2), NOW)
    assert (stored.event_id, stored.aggregate_id, stored.version) == (
        event.event_id,
        event.aggregate_id,
        3,
    )
    assert json.loads(stored.payload)["name"] == "x"
    assert stored == StoredEvent(event, Position(1, 2), NOW)
    assert len({stored, StoredEvent(event, Position(1, 2), NOW)}) == 1
    match stored:
        case StoredEvent(event=ItemAdded(name=name)):
            assert name == "x"


def test_a_row_decodes_once_on_first_access() -> None:
    event = ItemAdded(name="x", aggregate_id=uuid4(), aggregate_type="Cart")
    stored = _row(EventCodec.encode(event))
    assert not stored.decoded
    assert not stored.envelope_complete
    assert stored.event_type == "ItemAdded"
    assert stored.event is stored.event
    assert stored.decoded
    assert (stored.event_id, stored.aggregate_id, stored.aggregate_type) == (
        event.event_id,
        event.aggregate_id,
        "Cart",
    )
    assert stored.envelope_complete
    assert "ItemAdded" in repr(stored)


def test_ids_of_an_unknown_type_come_from_the_payload() -> None:
    event = UnregisteredEvent(note="n", aggregate_id=uuid4(), aggregate_type="Cart")
    stored = _row(EventCodec.encode(event), "UnregisteredEvent")
    assert (stored.event_id, stored.aggregate_id, stored.aggregate_type) == (
        event.event_id,
        event.aggregate_id,
        "Cart",
    )
    assert isinstance(stored.decode_error(), EventTypeNotFoundError)
    assert not stored.decoded
    assert "undecoded" in repr(stored)


@pytest.mark.parametrize(
    "payload",
    ['{"name": 1, "event_id": "not a uuid"}', '{"name": 1}', "[1, 2]", "{not json", '"x"'],
)
def test_ids_a_corrupt_payload_cannot_tell_raise_the_typed_error(payload: str) -> None:
    stored = _row(payload)
    with pytest.raises(SerializationError, match="ItemAdded"):
        stored.event_id  # noqa: B018
    with pytest.raises(SerializationError):
        stored.aggregate_id  # noqa: B018
    assert stored.payload == payload
    event_id, aggregate_id = uuid4(), uuid4()
    stored.set_envelope(event_id, aggregate_id, "Cart")
    assert (stored.event_id, stored.aggregate_id, stored.aggregate_type) == (
        event_id,
        aggregate_id,
        "Cart",
    )


@pytest.mark.parametrize("lean", [False, True])
def test_a_row_given_its_position_as_a_tuple_is_named_by_its_token_in_errors(
    lean: bool,
) -> None:
    """Stores pass a row's position as its (commit, sequence) tuple (built into a Position
    only when read); a decoding error still names the row by its position token."""
    envelope = (NOW.timestamp(), None, uuid4(), None, None) if lean else None
    stored = StoredEvent.from_row(
        _codec(),
        (812, 7),
        NOW,
        uuid4(),
        "ItemAdded",
        1,
        uuid4(),
        "Cart",
        1,
        '{"name": 1}',
        envelope,
    )
    with pytest.raises(SerializationError, match=r"at 812-7 ") as caught:
        stored.event  # noqa: B018
    assert "(812, 7)" not in str(caught.value)
    assert stored.position == Position(812, 7)
