"""Which fields of an event class are personal data: decided once per class."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import TypeAdapter

from eventsource.events.base import DomainEvent
from eventsource.exceptions import PersonalDataError
from eventsource.gdpr.values import ErasedData, ErasedText, PersonalData, erased_marker

__all__ = ["PersonalField", "personal_fields"]


@dataclass(frozen=True, slots=True)
class PersonalField:
    """One personal field of an event class: its name, the field naming its subject, and
    how its plain value is written to and read from the bytes that are encrypted."""

    name: str
    subject_field: str
    erased: ErasedData | ErasedText
    """What the field reads as once its subject was forgotten."""
    dump_json: Callable[[Any], bytes]
    """The plain value as the JSON bytes that are encrypted."""
    validate_json: Callable[[bytes], Any]
    """The plain value of decrypted JSON bytes, validated as the field's type."""

    def subject_of(self, event: DomainEvent) -> str | None:
        value = getattr(event, self.subject_field, None)
        return None if value is None else str(value)


_plans: dict[type[DomainEvent], tuple[PersonalField, ...]] = {}
_lock = threading.Lock()


def personal_fields(cls: type[DomainEvent]) -> tuple[PersonalField, ...]:
    """The personal fields of `cls` (empty for an event without any: those take no part in
    encryption at all). Raises `PersonalDataError` when a `PersonalData(subject=...)` names a
    field the class does not have."""
    plan = _plans.get(cls)
    if plan is not None:
        return plan
    fields = []
    for name, info in cls.model_fields.items():
        marks = [m for m in info.metadata if isinstance(m, PersonalData)]
        if not marks:
            continue
        subject = marks[0].subject
        if not isinstance(info.metadata[-1], PersonalData):
            raise PersonalDataError(
                f"{cls.__qualname__}.{name}: put PersonalData(...) last in Annotated[...], "
                "after constraints such as Field(max_length=...): constraints written after "
                "it would be checked against the ciphertext"
            )
        subject_info = cls.model_fields.get(subject)
        if subject_info is None or subject == name:
            raise PersonalDataError(
                f"{cls.__qualname__}.{name} is marked PersonalData(subject={subject!r}), but "
                f"{cls.__qualname__} has no other field {subject!r}: name the field that "
                "holds the data subject's id"
            )
        if any(isinstance(m, PersonalData) for m in subject_info.metadata):
            raise PersonalDataError(
                f"{cls.__qualname__}.{subject} names the data subject of {name!r} and cannot "
                "be personal data itself: the subject's id must stay readable to find its key"
            )
        others = [m for m in info.metadata if not isinstance(m, PersonalData)]
        annotation: Any = Annotated[(info.annotation, *others)] if others else info.annotation
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        fields.append(
            PersonalField(
                name,
                subject,
                erased_marker(info.annotation),
                adapter.serializer.to_json,
                adapter.validator.validate_json,
            )
        )
    plan = tuple(fields)
    with _lock:
        _plans[cls] = plan
    return plan
