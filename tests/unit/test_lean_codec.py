"""The lean stored form: an event's own fields as JSON, its envelope from typed columns.

`EventCodec.decode_lean` must read back what `encode_lean` wrote, run the class's own
validators as a complete payload would, and hand upcasters the same dict as before.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import (
    BaseModel,
    Field,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)

from eventsource import DomainEvent, EventCodec, EventRegistry, SerializationError
from eventsource.events.serialization import ENVELOPE_FIELDS, LeanEnvelope, utc_from_epoch

registry = EventRegistry()


class Shipped(DomainEvent, registry=registry):
    carrier: str
    parcels: int = 1
    weight: float = 0.5

    @field_validator("carrier")
    @classmethod
    def _known_carrier(cls, value: str) -> str:
        if value == "pigeon":
            raise ValueError("pigeons do not carry parcels")
        return value.strip()


class Strict(DomainEvent, registry=registry):
    count: int = Field(strict=True)


class Checked(DomainEvent, registry=registry):
    """A model validator that looks at the envelope: it must see the stored one."""

    amount: int

    @model_validator(mode="after")
    def _only_in_carts(self) -> Checked:
        if self.aggregate_type not in ("", "Cart"):
            raise ValueError(f"not an event of a Cart: {self.aggregate_type}")
        return self


class WithInfo(DomainEvent, registry=registry):
    """A field validator taking `info` may read envelope values in `info.data`."""

    amount: int

    @field_validator("amount")
    @classmethod
    def _seen(cls, value: int, info: ValidationInfo) -> int:
        assert "aggregate_id" in info.data
        return value


class Audit(BaseModel):
    user: str


class Typed(DomainEvent, registry=registry):
    """An envelope field of another type: read through the complete JSON."""

    metadata: Audit = Field(default_factory=lambda: Audit(user="system"))  # type: ignore[assignment]
    note: str = ""


class Renamed(DomainEvent, registry=registry):
    event_version: int = 2
    full_name: str


@registry.upcaster(Renamed, from_version=1)
def _split(data: dict[str, Any]) -> dict[str, Any]:
    upcast_inputs.append(dict(data))
    return {**{k: v for k, v in data.items() if k != "name"}, "full_name": data["name"]}


upcast_inputs: list[dict[str, Any]] = []


class Priced(DomainEvent, registry=registry):
    unit: int
    quantity: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        return self.unit * self.quantity


codec = EventCodec(registry)


def _attached(event: DomainEvent, aggregate_type: str = "Cart") -> DomainEvent:
    return event.attached(uuid4(), aggregate_type, 3)


def _envelope(event: DomainEvent, *, as_epoch: bool = False) -> LeanEnvelope:
    _, metadata = EventCodec.encode_lean(event)
    occurred_at: datetime | float = event.occurred_at
    if as_epoch:  # what PostgreSQL's date_part('epoch', occurred_at) sends
        occurred_at = event.occurred_at.timestamp()
    return LeanEnvelope(
        occurred_at, event.tenant_id, event.correlation_id, event.causation_id, metadata
    )


def _read(event: DomainEvent, payload: str | None = None, **changes: Any) -> DomainEvent:
    """Decode `event` as a lean row would hold it (its payload replaced when given)."""
    row: dict[str, Any] = {
        "event_type": event.event_type,
        "event_version": event.event_version,
        "payload": payload if payload is not None else EventCodec.encode_lean(event)[0],
        "event_id": event.event_id,
        "aggregate_id": event.aggregate_id,
        "aggregate_type": event.aggregate_type,
        "aggregate_version": event.aggregate_version,
        "envelope": _envelope(event),
    }
    row.update(changes)
    return codec.decode_lean(**row)


def test_the_payload_holds_the_events_own_fields_only() -> None:
    event = _attached(Shipped(carrier="post", tenant_id=uuid4()).with_metadata(user="ann"))
    payload, metadata = EventCodec.encode_lean(event)
    assert json.loads(payload) == {"carrier": "post", "parcels": 1, "weight": 0.5}
    assert json.loads(metadata or "") == {"user": "ann"}
    assert EventCodec.encode_lean(_attached(Shipped(carrier="post")))[1] is None
    assert not ENVELOPE_FIELDS & set(json.loads(payload))


def test_a_lean_row_reads_back_as_the_event_was() -> None:
    cause = Shipped(carrier="post")
    event = _attached(
        Shipped(carrier="dhl", parcels=3, weight=2.25, tenant_id=uuid4())
        .with_causation(cause)
        .with_metadata(user="ann", tags=["a", 1.5])
    )
    read = _read(event)
    assert read == event
    assert type(read) is Shipped
    assert read.model_dump() == event.model_dump()
    assert read.metadata is not event.metadata
    # occurred_at given as the epoch seconds PostgreSQL sends: the same UTC datetime
    as_epoch = _read(event, envelope=_envelope(event, as_epoch=True))
    assert as_epoch == event
    assert as_epoch.occurred_at.tzinfo is UTC


def test_field_validators_run_on_the_stored_fields() -> None:
    event = _attached(Shipped(carrier="post"))
    assert _read(event, '{"carrier": "  ups  ", "parcels": 2, "weight": 1.0}').carrier == "ups"  # type: ignore[attr-defined]
    with pytest.raises(SerializationError, match="pigeons do not carry parcels"):
        _read(event, '{"carrier": "pigeon", "parcels": 2, "weight": 1.0}')


def test_the_fields_are_validated_strictly_as_before() -> None:
    event = _attached(Shipped(carrier="post"))
    with pytest.raises(SerializationError, match="parcels"):
        _read(event, '{"carrier": "x", "parcels": "many", "weight": 1.0}')
    with pytest.raises(SerializationError, match="Extra inputs are not permitted"):
        _read(event, '{"carrier": "x", "parcels": 1, "weight": 1.0, "stowaway": 1}')
    with pytest.raises(SerializationError, match="Input should be an object"):
        _read(event, '"corrupt"')
    strict = _attached(Strict(count=1))
    assert _read(strict).count == 1  # type: ignore[attr-defined]
    with pytest.raises(SerializationError, match="count"):
        _read(strict, '{"count": "1"}')


def test_a_model_validator_runs_and_sees_the_stored_envelope() -> None:
    event = _attached(Checked(amount=1))
    assert _read(event) == event
    with pytest.raises(SerializationError, match="not an event of a Cart: Order"):
        _read(event, aggregate_type="Order")


def test_a_field_validator_taking_info_sees_the_envelope() -> None:
    event = _attached(WithInfo(amount=4))
    assert _read(event) == event


def test_an_envelope_field_of_another_type_reads_back() -> None:
    event = _attached(Typed(metadata=Audit(user="ann"), note="n"))
    payload, metadata = EventCodec.encode_lean(event)
    assert json.loads(payload) == {"note": "n"}
    assert json.loads(metadata or "") == {"user": "ann"}
    read = _read(event)
    assert read == event
    assert isinstance(read.metadata, Audit)


def test_an_old_version_is_upcast_from_the_complete_dict() -> None:
    """Upcasters receive what they received from a complete payload: the envelope too, as
    JSON values."""
    upcast_inputs.clear()
    event_id, aggregate_id, correlation_id = uuid4(), uuid4(), uuid4()
    occurred_at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    read = codec.decode_lean(
        "Renamed",
        1,
        '{"name": "Ada Lovelace"}',
        event_id,
        aggregate_id,
        "Person",
        4,
        LeanEnvelope(occurred_at, None, correlation_id, None, '{"user": "ann"}'),
    )
    assert isinstance(read, Renamed)
    assert (read.full_name, read.event_version, read.event_id) == ("Ada Lovelace", 2, event_id)
    assert (read.aggregate_id, read.aggregate_version, read.occurred_at) == (
        aggregate_id,
        4,
        occurred_at,
    )
    assert upcast_inputs == [
        {
            "event_id": str(event_id),
            "event_type": "Renamed",
            "event_version": 1,
            "occurred_at": "2026-01-02T03:04:05.678901Z",
            "aggregate_id": str(aggregate_id),
            "aggregate_type": "Person",
            "aggregate_version": 4,
            "tenant_id": None,
            "correlation_id": str(correlation_id),
            "causation_id": None,
            "metadata": {"user": "ann"},
            "name": "Ada Lovelace",
        }
    ]


def test_compose_writes_what_encode_writes() -> None:
    event = _attached(
        Shipped(carrier="dhl", tenant_id=uuid4()).with_metadata(user="ann", n={"x": [1]})
    )
    payload, _ = EventCodec.encode_lean(event)
    composed = EventCodec.compose(
        payload,
        event.event_type,
        event.event_version,
        event.event_id,
        event.aggregate_id,
        event.aggregate_type,
        event.aggregate_version,
        _envelope(event, as_epoch=True),
    )
    assert composed == EventCodec.encode(event)
    assert codec.decode("Shipped", 1, composed) == event
    # a payload without fields, and one that is not a JSON object (a damaged row)
    empty = _attached(Checked(amount=0))
    envelope = _envelope(empty)
    alone = EventCodec.compose(
        "{}", "Checked", 1, empty.event_id, empty.aggregate_id, "Cart", 3, envelope
    )
    complete = json.loads(EventCodec.encode(empty))
    del complete["amount"]
    assert json.loads(alone) == complete
    damaged = EventCodec.compose("not json", "Checked", 1, uuid4(), uuid4(), "C", 1, envelope)
    assert damaged == "not json"


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: Shipped(carrier="x").with_metadata(ratio=float("nan")), "metadata.ratio"),
        (lambda: Shipped(carrier="x", weight=float("inf")), "weight"),
        (lambda: Shipped(carrier="nul\x00"), "carrier"),
        (lambda: Shipped(carrier="x").attached(uuid4(), "Ca\x00rt", 1), "aggregate_type"),
    ],
    ids=["nan-in-metadata", "infinity", "nul-in-field", "nul-in-aggregate-type"],
)
def test_what_cannot_be_read_back_is_refused(make: Any, named: str) -> None:
    with pytest.raises(SerializationError, match=named):
        EventCodec.encode_lean(make())


def test_epoch_seconds_convert_exactly_to_the_microsecond() -> None:
    for microseconds in (0, 1, 123457, 499999, 500000, 999999):
        expected = datetime(2026, 12, 7, 14, 1, 18, microseconds, tzinfo=UTC)
        assert utc_from_epoch(expected.timestamp()) == expected
    late = datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert utc_from_epoch(late.timestamp()) == late


def test_ids_stay_uuid_values() -> None:
    event = _attached(Shipped(carrier="x"))
    read = _read(event)
    assert isinstance(read.event_id, UUID)
    assert read.event_id == event.event_id


class ShippedExpress(Shipped, registry=registry):
    """A subclass: a batch serializer for `Shipped` would drop its own field."""

    deadline: str = "tomorrow"


def _one_by_one(events: list[DomainEvent]) -> tuple[str, list[str | None]]:
    encoded = [EventCodec.encode_lean(event) for event in events]
    return f"[{','.join(p for p, _ in encoded)}]", [m for _, m in encoded]


@pytest.mark.parametrize(
    "events",
    [
        [Shipped(carrier="post", parcels=n, weight=n / 3) for n in range(5)],
        [Shipped(carrier="post"), ShippedExpress(carrier="van", deadline="noon")],
        [ShippedExpress(carrier="van"), Shipped(carrier="post")],
        [Shipped(carrier="post"), Shipped(carrier="post").with_metadata(trace="t-1")],
        [Typed(note="a"), Typed(note="b")],
        [Shipped(carrier='ünïcode \u2028 "quoted" \\ back')],
        [],
    ],
    ids=[
        "one-class",
        "subclass-after",
        "subclass-first",
        "metadata",
        "typed-metadata",
        "escapes",
        "empty",
    ],
)
def test_a_batch_encodes_as_its_events_do_one_by_one(events: list[DomainEvent]) -> None:
    """`encode_lean_batch` writes exactly the JSON array of what `encode_lean` writes for each
    event (a batch of one class in one call, any other batch event by event)."""
    attached = [_attached(e) for e in events]
    payloads, metadata = EventCodec.encode_lean_batch(attached)
    assert (payloads, metadata) == _one_by_one(attached)
    assert json.loads(payloads) == [json.loads(EventCodec.encode_lean(e)[0]) for e in attached]


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (Shipped(carrier="post", weight=float("nan")), "is nan"),
        (Shipped(carrier="post", weight=float("inf")), "is inf"),
        (Shipped(carrier="po\x00st"), "NUL"),
        (Shipped(carrier="post", event_type="Ship\x00ped"), "NUL"),
    ],
    ids=["nan", "infinity", "nul-in-field", "nul-in-type"],
)
def test_a_batch_refuses_an_unstorable_event_by_name(bad: Shipped, problem: str) -> None:
    """One unstorable event in a batch of one class is refused with the error `encode_lean`
    gives for it, naming that event, not the first of the batch."""
    batch = [_attached(Shipped(carrier="post")), _attached(bad), _attached(Shipped(carrier="x"))]
    with pytest.raises(SerializationError) as raised:
        EventCodec.encode_lean_batch(batch)
    assert str(bad.event_id) in str(raised.value)
    assert problem in str(raised.value)


def test_nan_in_a_string_is_no_reason_to_refuse_a_batch() -> None:
    """The cheap scan that sends a batch event by event also hits text that merely mentions
    NaN or Infinity; such a batch is stored as it is."""
    batch = [_attached(Shipped(carrier="NaN Infinity \\u0000 carriers"))]
    assert EventCodec.encode_lean_batch(batch) == _one_by_one(batch)


def test_computed_fields_are_never_stored_and_read_back_recomputed() -> None:
    event = _attached(Priced(unit=3, quantity=4))
    assert event.total == 12
    lean, _ = EventCodec.encode_lean(event)
    complete = EventCodec.encode(event)
    batch, _ = EventCodec.encode_lean_batch([event, _attached(Priced(unit=1, quantity=1))])
    assert json.loads(lean) == {"unit": 3, "quantity": 4}
    assert "total" not in json.loads(complete)
    assert all("total" not in item for item in json.loads(batch))
    assert _read(event) == event
    assert codec.decode("Priced", 1, complete) == event
    assert Priced.from_dict(event.to_dict()) == event
    assert "total" not in event.to_dict()


def test_payloads_written_with_computed_values_still_read() -> None:
    """What the library wrote before it left computed fields out: the values are dropped
    (recomputed), in the lean form, the complete form and `from_dict` alike."""
    event = _attached(Priced(unit=3, quantity=4))
    old_lean = json.dumps({"unit": 3, "quantity": 4, "total": 12})
    old_complete = event.model_dump_json()  # pydantic's own dump includes `total`
    assert "total" in json.loads(old_complete)
    assert _read(event, payload=old_lean) == event
    assert codec.decode("Priced", 1, old_complete) == event
    assert codec.decode("Priced", 1, old_complete) == event  # the cached class's path too
    assert Priced.from_dict(event.model_dump(mode="json")) == event
    with pytest.raises(SerializationError):  # other extra keys are still refused
        _read(event, payload=json.dumps({"unit": 3, "quantity": 4, "totl": 12}))
    with pytest.raises(SerializationError):
        codec.decode("Priced", 1, json.dumps({**json.loads(old_complete), "totl": 1}))


def test_values_json_normalises_do_not_make_a_class_refused() -> None:
    """A datetime or a tuple in `metadata` comes back as JSON has it (text, a list), as for
    every event: the first event of a class carrying one is stored, not refused."""

    class Noted(DomainEvent, registry=None):
        note: str

    at = datetime(2026, 12, 7, tzinfo=UTC)
    event = Noted(note="n").with_metadata(at=at, pair=(1, 2))
    text = EventCodec.encode(event)
    assert json.loads(text)["metadata"] == {"at": "2026-12-07T00:00:00Z", "pair": [1, 2]}
    lean, metadata = EventCodec.encode_lean(event)
    assert json.loads(lean) == {"note": "n"}
    assert metadata is not None
