"""Events with personal data, in a registry of their own (so tests see only these)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import Field

from eventsource import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.gdpr import PersonalData

registry = EventRegistry()

PLAIN_EMAIL = "zoe.plaintext@example.org"
PLAIN_NAME = "Zoë Secretname"


class CustomerRegistered(DomainEvent, registry=registry):
    customer_id: str
    email: Annotated[str, PersonalData(subject="customer_id")]
    name: Annotated[str, Field(max_length=200), PersonalData(subject="customer_id")]
    birthday: Annotated[date | None, PersonalData(subject="customer_id")] = None
    age: Annotated[int | None, PersonalData(subject="customer_id")] = None
    plan: str = "basic"


class EmailChanged(DomainEvent, registry=registry):
    customer_id: str | None
    email: Annotated[str | None, PersonalData(subject="customer_id")]


class OrderPlaced(DomainEvent, registry=registry):
    """No personal data: takes no part in encryption."""

    amount: int
