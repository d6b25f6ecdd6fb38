"""`EventSourceJSONEncoder` and `dumps`: each supported type, read back without loss."""

from __future__ import annotations

import base64
import enum
import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from eventsource import DomainEvent, EventRegistry
from eventsource.serialization import EventSourceJSONEncoder, dumps

registry = EventRegistry()


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Priority(enum.Enum):
    LOW = 1
    HIGH = 2


class Tenant(enum.Enum):
    """An enum whose values need the encoder themselves."""

    ACME = UUID("00000000-0000-0000-0000-00000000ace1")


class Money(BaseModel):
    amount: Decimal
    currency: str


class Invoice(BaseModel):
    invoice_id: UUID
    issued_at: datetime
    total: Money
    tags: set[str]


class PaymentReceived(DomainEvent, registry=registry):
    amount: Decimal
    paid_on: date


def _round_trip(value: Any) -> Any:
    return json.loads(dumps(value))


def test_uuids_are_their_canonical_text() -> None:
    value = uuid4()
    assert _round_trip({"id": value}) == {"id": str(value)}
    assert UUID(_round_trip(value)) == value


def test_datetimes_dates_and_times_are_iso_8601_keeping_the_offset() -> None:
    plus_two = timezone(timedelta(hours=2))
    aware = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=plus_two)
    naive = datetime(2024, 3, 1, 12, 30)
    encoded = _round_trip([aware, naive, date(2024, 3, 1), time(8, 5, tzinfo=UTC)])

    assert encoded == [
        "2024-03-01T12:30:15.123456+02:00",
        "2024-03-01T12:30:00",
        "2024-03-01",
        "08:05:00+00:00",
    ]
    restored = datetime.fromisoformat(encoded[0])
    assert restored == aware
    assert restored.utcoffset() == timedelta(hours=2)
    assert datetime.fromisoformat(encoded[1]).tzinfo is None
    assert time.fromisoformat(encoded[3]) == time(8, 5, tzinfo=UTC)


def test_decimals_are_strings_so_precision_and_scale_survive() -> None:
    amounts = [Decimal("10.10"), Decimal("0.1"), Decimal("12345678901234567890.123456789")]
    encoded = _round_trip(amounts)

    assert encoded == ["10.10", "0.1", "12345678901234567890.123456789"]
    assert [Decimal(text) for text in encoded] == amounts
    assert str(Decimal(encoded[0])) == "10.10"  # the scale (two places) is kept


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_finite_decimal_round_trips_exactly(value: Decimal) -> None:
    restored = Decimal(_round_trip(value))
    assert restored == value
    assert restored.as_tuple() == value.as_tuple()


# Whole seconds: real offsets are whole minutes, and Python 3.11's `fromisoformat` drops the
# microseconds of an offset such as +00:00:00.000001 (a value no clock uses).
_offsets = st.builds(
    timezone,
    st.integers(min_value=-(23 * 3600 + 59 * 60), max_value=23 * 3600).map(
        lambda seconds: timedelta(seconds=seconds)
    ),
)


@given(st.datetimes(timezones=_offsets))
def test_any_datetime_with_an_offset_round_trips(value: datetime) -> None:
    """ISO 8601 holds the offset, not a zone name: a `ZoneInfo` datetime comes back as its
    fixed offset at that instant."""
    restored = datetime.fromisoformat(_round_trip(value))
    assert restored == value
    assert restored.utcoffset() == value.utcoffset()


def test_enums_are_their_value_encoded_in_turn() -> None:
    assert _round_trip([Color.RED, Priority.HIGH]) == ["red", 2]
    assert _round_trip(Tenant.ACME) == str(Tenant.ACME.value)
    assert Color(_round_trip(Color.BLUE)) is Color.BLUE


def test_pydantic_models_use_their_json_mode_dump() -> None:
    invoice = Invoice(
        invoice_id=uuid4(),
        issued_at=datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
        total=Money(amount=Decimal("99.90"), currency="EUR"),
        tags={"b", "a"},
    )
    encoded = _round_trip({"invoice": invoice})["invoice"]

    assert encoded["invoice_id"] == str(invoice.invoice_id)
    assert encoded["total"] == {"amount": "99.90", "currency": "EUR"}
    assert Invoice.model_validate(encoded) == invoice


def test_domain_events_round_trip_through_the_encoder() -> None:
    event = PaymentReceived(amount=Decimal("12.50"), paid_on=date(2024, 6, 30))
    encoded = _round_trip(event)

    assert encoded["amount"] == "12.50"
    assert encoded["event_type"] == "PaymentReceived"
    assert PaymentReceived.model_validate(encoded) == event


def test_sets_are_sorted_lists_when_their_items_compare() -> None:
    ids = {uuid4() for _ in range(5)}
    assert _round_trip({"c", "a", "b"}) == ["a", "b", "c"]
    assert _round_trip(frozenset({3, 1, 2})) == [1, 2, 3]
    assert _round_trip(ids) == [str(i) for i in sorted(ids)]
    assert dumps({"x": {2, 1}}) == dumps({"x": {1, 2}})


def test_sets_of_items_that_do_not_compare_keep_every_item() -> None:
    encoded = _round_trip({Color.RED, Color.BLUE, 3})
    assert sorted(map(str, encoded)) == ["3", "blue", "red"]


def test_bytes_are_padded_standard_base64() -> None:
    raw = bytes(range(256))
    encoded = _round_trip([raw, bytearray(b"\x00\xff"), memoryview(b"ab")])

    assert encoded[1:] == ["AP8=", "YWI="]
    assert base64.b64decode(encoded[0]) == raw


@pytest.mark.parametrize("value", [object(), 1 + 2j, timedelta(seconds=1), {uuid4(): 1}])
def test_other_types_raise_type_error_as_json_does(value: object) -> None:
    with pytest.raises(TypeError, match=r"not JSON serializable|keys must be"):
        dumps(value)


def test_dumps_passes_the_json_options_and_matches_the_encoder_class() -> None:
    value = {"b": Decimal("1.0"), "a": "é"}

    assert dumps(value, sort_keys=True, separators=(",", ":")) == '{"a":"\\u00e9","b":"1.0"}'
    assert dumps(value, ensure_ascii=False, sort_keys=True) == '{"a": "é", "b": "1.0"}'
    assert dumps(value, indent=2) == json.dumps(value, cls=EventSourceJSONEncoder, indent=2)
