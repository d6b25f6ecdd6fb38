"""Events used by the contract suites, kept in their own registry (`contract_registry`) so they
never collide with an application's event types.

`ProfileCreated` exists in three schema generations: V1 and V2 are the classes old code wrote
with; the current class (version 3) reads all three through the upcasters registered below.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, computed_field, field_serializer
from pydantic.alias_generators import to_camel

from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry

__all__ = [
    "CartCheckedOut",
    "ItemAdded",
    "ItemLabelled",
    "ItemPriced",
    "PriceQuoted",
    "ItemRemoved",
    "ProfileCreated",
    "ProfileCreatedV1",
    "ProfileCreatedV2",
    "TokenIssued",
    "UnregisteredEvent",
    "WishlistShared",
    "contract_registry",
]

contract_registry = EventRegistry()
_elsewhere = EventRegistry()


class ItemAdded(DomainEvent, registry=contract_registry):
    name: str
    quantity: int = 1


class ItemRemoved(DomainEvent, registry=contract_registry):
    name: str


class CartCheckedOut(DomainEvent, registry=contract_registry):
    pass


class ItemPriced(DomainEvent, registry=contract_registry):
    """An event with a computed field: derived, so never stored, and recomputed on read."""

    name: str
    unit_cents: int
    quantity: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_cents(self) -> int:
        return self.unit_cents * self.quantity


class ItemLabelled(DomainEvent, registry=contract_registry):
    """A field with an alias (what a JSON API's camelCase names give)."""

    item_name: str = Field(alias="itemName")
    label: str


class WishlistShared(DomainEvent, registry=contract_registry):
    """Every field aliased by an alias generator, the envelope's included."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=False
    )

    shared_with: str


class TokenIssued(DomainEvent, registry=contract_registry):
    """Its JSON cannot read back: a field without a default is left out of it."""

    token: str = Field(exclude=True)
    user: str


class PriceQuoted(DomainEvent, registry=contract_registry):
    """Its JSON cannot read back: the serializer writes what the field refuses."""

    cents: int

    @field_serializer("cents")
    def _as_text(self, cents: int) -> str:
        return f"{cents / 100:.2f} EUR"


class ProfileCreatedV1(DomainEvent, registry=None):
    """Generation 1: one `name` field."""

    event_type: str = "ProfileCreated"
    name: str


class ProfileCreatedV2(DomainEvent, registry=None):
    """Generation 2: the name split in two."""

    event_type: str = "ProfileCreated"
    event_version: int = 2
    first_name: str
    last_name: str


class ProfileCreated(DomainEvent, registry=contract_registry):
    """Generation 3 (current): split name plus an e-mail address that may be unknown."""

    event_version: int = 3
    first_name: str
    last_name: str
    email: str | None


@contract_registry.upcaster("ProfileCreated", from_version=1)
def _profile_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first_name": first, "last_name": last}


@contract_registry.upcaster("ProfileCreated", from_version=2)
def _profile_v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "email": None}


class UnregisteredEvent(DomainEvent, registry=_elsewhere):
    """Registered elsewhere only: reading it through `contract_registry` must fail clearly."""

    note: str = ""
