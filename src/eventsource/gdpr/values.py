"""`PersonalData`: the annotation that marks an event field as a data subject's personal data,
and the values such a field holds besides its plain value.

A personal field holds one of three things:

* its plain value (what the application wrote, or what a `PersonalDataVault` opened);
* a `Sealed` token (`"gdpr:v1:..."`): the value encrypted with its subject's key, as stores,
  buses, the outbox and dead letters keep it;
* an erased marker, once its subject was forgotten: `ERASED_TEXT` (a `str`, ``"[erased]"``)
  in a `str` field, so text handling keeps working, and `ERASED` elsewhere (an `int` field
  cannot hold a distinguishable int). `is_erased(value)` tells either apart from data.

JSON written for an event never holds a plain personal value: serializing one to JSON raises
(`PersonalDataError`, which the codec reports as `SerializationError`), so nothing can store
or publish personal data unencrypted by mistake. This module imports no cryptography.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import UnionType
from typing import Any, Final, Union, get_args, get_origin

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from eventsource.exceptions import PersonalDataError

__all__ = [
    "ERASED",
    "ERASED_TEXT",
    "ERASED_TOKEN",
    "SEALED_PREFIX",
    "ErasedData",
    "ErasedText",
    "PersonalData",
    "Sealed",
    "is_erased",
]

SEALED_PREFIX: Final = "gdpr:v1:"
"""How a sealed value starts in JSON (a personal text value starting so is read as sealed)."""
ERASED_TOKEN: Final = "gdpr:erased"
"""How an erased value is written to JSON."""


class ErasedData:
    """The marker a personal field holds once its subject was forgotten (see `ERASED`).

    Falsy, printed as ``[erased]``, equal only to another erased marker.
    """

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "ERASED"

    def __str__(self) -> str:
        return "[erased]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErasedData)

    def __hash__(self) -> int:
        return hash(ERASED_TOKEN)


class ErasedText(str):
    """The erased marker of a `str` field: the text ``"[erased]"``, recognisable by type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ERASED_TEXT"


ERASED: Final = ErasedData()
"""What a non-text personal field reads as after its subject was forgotten."""
ERASED_TEXT: Final = ErasedText("[erased]")
"""What a `str` personal field reads as after its subject was forgotten."""


def erased_marker(annotation: Any) -> ErasedData | ErasedText:
    """The marker an erased field of type `annotation` holds: `ERASED_TEXT` for `str` (and
    optional `str`), `ERASED` otherwise."""
    if annotation is str or (
        get_origin(annotation) in (Union, UnionType) and str in get_args(annotation)
    ):
        return ERASED_TEXT
    return ERASED


def is_erased(value: object) -> bool:
    """Whether `value` is an erased marker (`ERASED` or `ERASED_TEXT`)."""
    return isinstance(value, ErasedData | ErasedText)


class Sealed:
    """A personal value as stored: its token, ``"gdpr:v1:"`` + base64 of nonce, ciphertext
    and tag. Only a `PersonalDataVault` holding the subject's key can open it."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return "Sealed(...)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sealed) and other.token == self.token

    def __hash__(self) -> int:
        return hash(self.token)


@dataclass(frozen=True, slots=True)
class PersonalData:
    """Marks an event field as personal data of the subject named by another field::

        class CustomerRegistered(DomainEvent):
            customer_id: str
            email: Annotated[str, PersonalData(subject="customer_id")]

    The subject is the value of the field `subject` of the same event (as text). A
    `PersonalDataVault` encrypts the field with that subject's key when events are appended
    and decrypts it when they are read; `forget(subject)` deletes the key. An event whose
    subject field is None (or missing) while a personal value is set cannot be sealed:
    `PersonalDataError`. A personal value of None is not personal data and stays None.
    """

    subject: str

    def __get_pydantic_core_schema__(
        self, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        inner = handler(source_type)
        erased = erased_marker(source_type)

        def validate(value: Any, validate_inner: core_schema.ValidatorFunctionWrapHandler) -> Any:
            if type(value) is str:
                if value.startswith(SEALED_PREFIX):
                    return Sealed(value)
                if value == ERASED_TOKEN:
                    return erased
            elif isinstance(value, Sealed | ErasedData | ErasedText):
                return value
            return validate_inner(value)

        def serialize(
            value: Any,
            serialize_inner: core_schema.SerializerFunctionWrapHandler,
            info: core_schema.SerializationInfo,
        ) -> Any:
            if isinstance(value, Sealed):
                return value.token
            if isinstance(value, ErasedData | ErasedText):
                return ERASED_TOKEN if info.mode_is_json() else value
            if info.mode_is_json() and value is not None:
                raise PersonalDataError(
                    "a personal data field holds its plain value and cannot be written as "
                    "JSON: append events through EncryptedEventStore (or seal them with "
                    "PersonalDataVault.seal) so that only ciphertext leaves the process"
                )
            return serialize_inner(value)

        return core_schema.no_info_wrap_validator_function(
            validate,
            inner,
            serialization=core_schema.wrap_serializer_function_ser_schema(
                serialize, schema=inner, info_arg=True, when_used="always"
            ),
        )
