"""Sealing, opening and forgetting on events in memory: the vault and the field type."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Annotated

import pytest
from pydantic import Field

from eventsource import DomainEvent
from eventsource.events import EventCodec
from eventsource.events.registry import EventRegistry
from eventsource.exceptions import DecryptionError, PersonalDataError, SerializationError
from eventsource.gdpr import (
    ERASED,
    ERASED_TEXT,
    InMemoryKeyStore,
    PersonalData,
    PersonalDataVault,
    Sealed,
    is_erased,
)
from eventsource.gdpr._cache import KeyCache
from tests.gdpr._events import (
    PLAIN_EMAIL,
    CustomerRegistered,
    EmailChanged,
    OrderPlaced,
    registry,
)


def _customer(subject: str = "c-1") -> CustomerRegistered:
    return CustomerRegistered(
        customer_id=subject, email=PLAIN_EMAIL, name="Zoë", birthday=date(1990, 5, 17), age=36
    )


async def test_seal_then_open_round_trips_every_type() -> None:
    vault = PersonalDataVault(InMemoryKeyStore())
    event = _customer()
    [sealed] = await vault.seal([event])
    assert all(isinstance(sealed.__dict__[f], Sealed) for f in ("email", "name", "birthday"))
    assert sealed.plan == "basic"
    assert sealed.customer_id == "c-1"
    text = EventCodec.encode(sealed)
    assert PLAIN_EMAIL not in text
    assert "Zoë" not in text
    assert "1990" not in text
    decoded = EventCodec(registry).decode("CustomerRegistered", 1, text)
    [opened] = await vault.open([decoded])
    assert opened == event


async def test_events_without_personal_data_pass_through_untouched() -> None:
    vault = PersonalDataVault(InMemoryKeyStore())
    order = OrderPlaced(amount=5)
    assert (await vault.seal([order]))[0] is order
    assert (await vault.open([order]))[0] is order


async def test_plain_personal_values_are_never_written_as_json() -> None:
    with pytest.raises(SerializationError, match="plain value"):
        EventCodec.encode(_customer())
    assert _customer().model_dump()["email"] == PLAIN_EMAIL  # Python mode: in memory only


async def test_a_personal_value_without_subject_is_refused() -> None:
    vault = PersonalDataVault(InMemoryKeyStore())
    with pytest.raises(PersonalDataError, match="customer_id"):
        await vault.seal([EmailChanged(customer_id=None, email=PLAIN_EMAIL)])
    # no personal value: nothing to seal, nothing refused
    [kept] = await vault.seal([EmailChanged(customer_id=None, email=None)])
    assert kept.email is None


async def test_forgotten_subject_reads_as_erased_markers() -> None:
    vault = PersonalDataVault(InMemoryKeyStore())
    sealed = await vault.seal([_customer("gone"), _customer("kept")])
    assert await vault.forget_key("gone") is True
    gone, kept = await vault.open(sealed)
    assert gone.email is ERASED_TEXT
    assert gone.name is ERASED_TEXT
    assert gone.email.upper() == "[ERASED]"
    assert gone.age is ERASED
    assert gone.birthday is ERASED
    assert not gone.age
    assert is_erased(gone.email)
    assert is_erased(gone.age)
    assert not is_erased(kept.email)
    assert gone.plan == "basic"
    assert gone.customer_id == "gone"
    assert kept.email == PLAIN_EMAIL
    # an erased event still serializes and validates back to the same markers
    text = EventCodec.encode(gone)
    assert json.loads(text)["email"] == "gdpr:erased"
    again = CustomerRegistered.model_validate_json(text)
    assert again.email is ERASED_TEXT
    assert again.age is ERASED


@pytest.mark.parametrize(
    "damage", ["tamper", "garbage", "truncated", "swap_fields", "swap_events", "other_key"]
)
async def test_undecryptable_values_raise_a_typed_error(damage: str) -> None:
    vault = PersonalDataVault(InMemoryKeyStore())
    first, second = await vault.seal([_customer("s"), _customer("s")])
    token = first.__dict__["email"].token
    if damage == "tamper":
        raw = bytearray(base64.b64decode(token[len("gdpr:v1:") :]))
        raw[20] ^= 1  # one bit of the ciphertext
        tampered = "gdpr:v1:" + base64.b64encode(bytes(raw)).decode()
        bad = first.model_copy(update={"email": Sealed(tampered)})
    elif damage in ("garbage", "truncated"):
        broken = "gdpr:v1:***" if damage == "garbage" else token[:20]
        bad = first.model_copy(update={"email": Sealed(broken)})
    elif damage == "swap_fields":
        bad = first.model_copy(update={"name": first.__dict__["email"]})
    elif damage == "swap_events":
        bad = second.model_copy(update={"email": first.__dict__["email"]})
    else:
        [other] = await PersonalDataVault(InMemoryKeyStore()).seal(
            [
                first.model_copy(
                    update={"email": PLAIN_EMAIL, "name": "x", "birthday": None, "age": None}
                )
            ]
        )
        bad = first.model_copy(update={"email": other.__dict__["email"]})
    with pytest.raises(DecryptionError) as raised:
        await vault.open([bad])
    assert raised.value.subject == "s"
    assert raised.value.field in {"email", "name"}


async def test_sealing_is_deterministic_per_event_so_retries_stay_idempotent() -> None:
    vault = PersonalDataVault(InMemoryKeyStore())
    event = _customer()
    [a] = await vault.seal([event])
    [b] = await vault.seal([event])
    assert EventCodec.encode(a) == EventCodec.encode(b)
    [c] = await vault.seal([event.model_copy(update={"email": "other@example.org"})])
    assert c.__dict__["email"] != a.__dict__["email"]


async def test_keys_are_fetched_once_per_batch_and_cached() -> None:
    class Counting(InMemoryKeyStore):
        calls = 0

        async def get_or_create_keys(self, subjects):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            return await super().get_or_create_keys(subjects)

    vault = PersonalDataVault(Counting())
    await vault.seal([_customer(f"s{i}") for i in range(50)])
    await vault.seal([_customer(f"s{i}") for i in range(50)])
    assert Counting.calls == 1


def test_key_cache_is_bounded_by_size_and_age() -> None:
    now = [0.0]
    cache = KeyCache(2, 10.0, clock=lambda: now[0])
    cache.put_all([("a", b"1"), ("b", b"2")])
    assert cache.get("a") == b"1"  # a is now the most recently used
    cache.put_all([("c", b"3")])
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"1", None, b"3")
    now[0] = 10.0
    assert cache.get("a") is None
    assert len(cache) == 1


def test_a_subject_field_that_does_not_exist_is_reported() -> None:
    registry = EventRegistry()

    class Broken(DomainEvent, registry=registry):
        email: Annotated[str, PersonalData(subject="customer")]

    from eventsource.gdpr._plan import personal_fields

    class Misordered(DomainEvent, registry=registry):
        customer: str
        name: Annotated[str, PersonalData(subject="customer"), Field(max_length=9)]

    with pytest.raises(PersonalDataError, match="customer"):
        personal_fields(Broken)
    with pytest.raises(PersonalDataError, match="last"):
        personal_fields(Misordered)


def test_erased_markers_compare_and_print() -> None:
    assert ERASED == ERASED
    assert str(ERASED) == "[erased]"
    assert repr(ERASED) == "ERASED"
    assert ERASED_TEXT == "[erased]"
    assert isinstance(ERASED_TEXT, str)
    assert Sealed("gdpr:v1:x") == Sealed("gdpr:v1:x")
