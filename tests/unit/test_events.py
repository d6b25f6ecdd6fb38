from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import RFC_4122, uuid4

import pytest
from pydantic import ValidationError

from eventsource import (
    NIL_AGGREGATE_ID,
    DomainEvent,
    DuplicateEventTypeError,
    EventCodec,
    EventRegistry,
    EventTypeNotFoundError,
    SerializationError,
    UpcasterRegistrationError,
    UpcastingError,
)

registry = EventRegistry()


class PriceChanged(DomainEvent, registry=registry):
    price: Decimal


class Renamed(DomainEvent, registry=registry):
    event_type: str = "catalog.renamed"
    name: str


def test_defaults_and_type_name() -> None:
    event = PriceChanged(price=Decimal("9.99"))
    assert event.event_type == "PriceChanged"
    assert PriceChanged.type_name() == "PriceChanged"
    assert Renamed(name="x").event_type == "catalog.renamed"
    assert event.event_version == 1 == PriceChanged.schema_version()
    assert event.aggregate_id == NIL_AGGREGATE_ID
    assert not event.is_attached
    assert event.occurred_at.tzinfo is not None
    assert event.event_id != PriceChanged(price=Decimal(1)).event_id


def test_event_ids_are_time_ordered_uuid7_and_start_their_own_correlation() -> None:
    first = PriceChanged(price=Decimal(1))
    assert first.event_id.version == 7
    assert first.correlation_id == first.event_id
    assert first.causation_id is None
    ids = [PriceChanged(price=Decimal(n)).event_id for n in range(2000)]
    assert len(set(ids)) == len(ids)
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    assert abs((ids[-1].int >> 80) - stamp) < 5_000  # the first 48 bits are Unix milliseconds
    assert ids[0].int >> 80 <= ids[-1].int >> 80


def test_event_ids_carry_74_random_bits_and_the_rfc_variant() -> None:
    from eventsource._internal.ids import uuid7

    ids = [uuid7() for _ in range(4000)]
    assert all(i.version == 7 and i.variant == RFC_4122 for i in ids)
    random_bits = [b for b in range(80) if b not in (62, 63, 76, 77, 78, 79)]
    assert len(random_bits) == 74
    for bit in random_bits:  # each random bit is set in about half the ids
        ones = sum(i.int >> bit & 1 for i in ids)
        assert 1600 < ones < 2400, (bit, ones)


def test_forked_processes_never_share_id_randomness() -> None:
    import os

    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    from eventsource._internal.ids import uuid7

    uuid7()  # the parent has a buffer of random bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, uuid7().bytes)
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 16)
    parent = uuid7().bytes
    os.close(read)
    os.close(write)
    assert child[8:] != parent[8:], "the child reused the parent's buffered random bytes"


def test_attached_copy_is_the_event_stamped_with_its_stream() -> None:
    event = PriceChanged(price=Decimal("2.50"), metadata={"k": "v"})
    stream = uuid4()
    attached = event.attached(stream, "Product", 7)
    expected = event.model_copy(
        update={"aggregate_id": stream, "aggregate_type": "Product", "aggregate_version": 7}
    )
    assert attached == expected
    assert attached.model_dump_json() == expected.model_dump_json()
    assert attached.model_fields_set == expected.model_fields_set
    assert attached.is_attached
    assert not event.is_attached
    assert event.aggregate_version == 0  # the original is untouched
    with pytest.raises(ValidationError):
        attached.aggregate_version = 8  # type: ignore[misc]


def test_events_are_frozen_and_strict() -> None:
    event = PriceChanged(price=Decimal(1))
    with pytest.raises(ValidationError):
        event.price = Decimal(2)  # type: ignore[misc]
    with pytest.raises(ValidationError):
        PriceChanged(price=Decimal(1), pricee=3)  # type: ignore[call-arg]


def test_occurred_at_is_normalised_to_utc() -> None:
    local = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    event = PriceChanged(price=Decimal(1), occurred_at=local)
    assert event.occurred_at == local
    assert event.occurred_at.utcoffset() == timedelta(0)
    with pytest.raises(ValidationError):
        PriceChanged(price=Decimal(1), occurred_at=datetime(2026, 1, 1))  # naive


def test_with_causation_and_metadata() -> None:
    cause = Renamed(name="a")
    effect = PriceChanged(price=Decimal(1)).with_causation(cause).with_metadata(user="u")
    assert effect.causation_id == cause.event_id
    assert effect.correlation_id == cause.correlation_id
    assert effect.with_metadata(trace="t").metadata == {"user": "u", "trace": "t"}


def test_dict_round_trip() -> None:
    event = PriceChanged(price=Decimal("1.50"), tenant_id=uuid4(), metadata={"k": [1, 2]})
    data = event.to_dict()
    assert data["event_id"] == str(event.event_id)
    assert PriceChanged.from_dict(data) == event
    with pytest.raises(SerializationError, match="PriceChanged"):
        PriceChanged.from_dict({"price": "not a number"})


def test_registry_lookup_and_errors() -> None:
    assert registry.get("PriceChanged") is PriceChanged
    assert registry.get_or_none("nope") is None
    assert "catalog.renamed" in registry
    assert registry.is_registered(Renamed)
    assert registry.list_types() == ["PriceChanged", "catalog.renamed"]
    with pytest.raises(EventTypeNotFoundError, match="PriceChanged") as caught:
        registry.get("PriceChnged")
    assert caught.value.event_type == "PriceChnged"


def test_duplicate_type_name_is_an_error() -> None:
    with pytest.raises(DuplicateEventTypeError, match="PriceChanged"):

        class PriceChanged(DomainEvent, registry=registry):  # same name, other class
            price: int


def test_redefinition_of_the_same_class_replaces_it() -> None:
    local = EventRegistry()

    def define() -> type[DomainEvent]:
        class Reloaded(DomainEvent, registry=local):
            value: int

        return Reloaded

    first, second = define(), define()
    assert local.get("Reloaded") is second is not first


def test_registry_none_keeps_a_class_out() -> None:
    class AbstractBase(DomainEvent, registry=None):
        pass

    assert not registry.is_registered("AbstractBase")


def test_module_level_helpers_use_the_default_registry() -> None:
    from eventsource import (
        default_registry,
        get_event_class,
        get_event_class_or_none,
        is_event_registered,
        list_registered_events,
        register_event,
    )

    class DefaultRegistryEvent(DomainEvent):
        pass

    try:
        assert get_event_class("DefaultRegistryEvent") is DefaultRegistryEvent
        assert get_event_class_or_none("DefaultRegistryEvent") is DefaultRegistryEvent
        assert is_event_registered(DefaultRegistryEvent)
        assert "DefaultRegistryEvent" in list_registered_events()
        assert register_event(DefaultRegistryEvent) is DefaultRegistryEvent  # idempotent
    finally:
        default_registry.unregister(DefaultRegistryEvent)
    assert get_event_class_or_none("DefaultRegistryEvent") is None


# -- upcasting --------------------------------------------------------------------------------

versions = EventRegistry()


class Moved(DomainEvent, registry=versions):
    event_version: int = 3
    street: str
    city: str
    country: str


@versions.upcaster(Moved, from_version=1)
def _v1(data: dict[str, Any]) -> dict[str, Any]:
    street, city = data.pop("address").split(", ")
    return {**data, "street": street, "city": city}


@versions.upcaster("Moved", from_version=2)
def _v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "country": "NL"}


def _stored(version: int, **fields: Any) -> str:
    import json

    base = Moved(street="s", city="c", country="x").to_dict()
    for key in ("street", "city", "country"):
        base.pop(key)
    return json.dumps({**base, **fields, "event_version": version})


def test_three_generations_are_upcast() -> None:
    codec = EventCodec(versions)
    v1 = codec.decode("Moved", 1, _stored(1, address="Main St 1, Delft"))
    v2 = codec.decode("Moved", 2, _stored(2, street="Dam 1", city="Amsterdam"))
    v3 = codec.decode("Moved", 3, _stored(3, street="Rue 2", city="Paris", country="FR"))
    assert [(e.street, e.city, e.country) for e in (v1, v2, v3)] == [  # type: ignore[attr-defined]
        ("Main St 1", "Delft", "NL"),
        ("Dam 1", "Amsterdam", "NL"),
        ("Rue 2", "Paris", "FR"),
    ]
    assert {e.event_version for e in (v1, v2, v3)} == {3}


def test_missing_upcaster_and_future_versions_fail_clearly() -> None:
    local = EventRegistry()

    class Grown(DomainEvent, registry=local):
        event_version: int = 3
        size: int

    local.register_upcaster(Grown, 1, lambda d: d)
    codec = EventCodec(local)
    with pytest.raises(UpcastingError, match="from version 2 to 3"):
        codec.decode("Grown", 1, '{"size": 1}')
    with pytest.raises(UpcastingError, match="newer"):
        codec.decode("Grown", 4, '{"size": 1}')


def test_failing_upcaster_is_wrapped() -> None:
    codec = EventCodec(versions)
    with pytest.raises(UpcastingError, match="from version 1"):
        codec.decode("Moved", 1, _stored(1, address="no comma here"))


def test_upcaster_registration_errors() -> None:
    with pytest.raises(UpcasterRegistrationError, match="already registered"):
        versions.register_upcaster("Moved", 1, lambda d: d)
    with pytest.raises(UpcasterRegistrationError, match=">= 1"):
        versions.register_upcaster("Moved", 0, lambda d: d)


def test_codec_errors_are_typed() -> None:
    codec = EventCodec(registry)
    with pytest.raises(EventTypeNotFoundError):
        codec.decode("Unknown", 1, "{}")
    with pytest.raises(SerializationError, match="position 7"):
        codec.decode("PriceChanged", 1, '{"price": [1]}', "position 7")
    versions_codec = EventCodec(versions)
    with pytest.raises(SerializationError, match="not a JSON object"):
        versions_codec.decode("Moved", 1, "[1, 2]")
    with pytest.raises(SerializationError):
        codec.decode("PriceChanged", 1, b"\xff\xfe")


def test_unserializable_metadata_is_a_serialization_error() -> None:
    event = PriceChanged(price=Decimal(1), metadata={"when": object()})
    with pytest.raises(SerializationError, match="PriceChanged"):
        EventCodec.encode(event)


def test_current_version_hot_path_reads_exact_json() -> None:
    event = PriceChanged(price=Decimal("2.5"), occurred_at=datetime(2026, 5, 1, tzinfo=UTC))
    assert EventCodec(registry).decode("PriceChanged", 1, EventCodec.encode(event)) == event
