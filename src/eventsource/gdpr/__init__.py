"""GDPR compliance by crypto-shredding: personal fields encrypted per data subject.

Mark personal fields with `PersonalData(subject=...)`, wrap the event store in an
`EncryptedEventStore` with a `PersonalDataVault` over a `KeyStore`, and `forget(subject)`
deletes the subject's key: its personal values read as erased markers from then on. See
docs/gdpr.md. The annotation and markers (`eventsource.gdpr.values`) import no cryptography;
the rest needs the `gdpr` extra (``pip install 'eventsource-async[gdpr]'``). The SQLite and
PostgreSQL key stores are exported lazily (they need their drivers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource.gdpr.in_memory import InMemoryKeyStore
from eventsource.gdpr.interface import KeyStore
from eventsource.gdpr.values import (
    ERASED,
    ERASED_TEXT,
    ErasedData,
    ErasedText,
    PersonalData,
    Sealed,
    is_erased,
)

if TYPE_CHECKING:
    from eventsource.gdpr.handlers import OpenedHandler, OpenedProjection
    from eventsource.gdpr.postgresql import PostgreSQLKeyStore
    from eventsource.gdpr.sqlite import SQLiteKeyStore
    from eventsource.gdpr.store import EncryptedEventStore, ForgetReport, SubjectExport
    from eventsource.gdpr.vault import PersonalDataVault

__all__ = [
    "ERASED",
    "ERASED_TEXT",
    "EncryptedEventStore",
    "ErasedData",
    "ErasedText",
    "ForgetReport",
    "InMemoryKeyStore",
    "KeyStore",
    "OpenedHandler",
    "OpenedProjection",
    "PersonalData",
    "PersonalDataVault",
    "PostgreSQLKeyStore",
    "SQLiteKeyStore",
    "Sealed",
    "SubjectExport",
    "is_erased",
]

_LAZY = {
    "EncryptedEventStore": "eventsource.gdpr.store",
    "ForgetReport": "eventsource.gdpr.store",
    "SubjectExport": "eventsource.gdpr.store",
    "OpenedHandler": "eventsource.gdpr.handlers",
    "OpenedProjection": "eventsource.gdpr.handlers",
    "PersonalDataVault": "eventsource.gdpr.vault",
    "PostgreSQLKeyStore": "eventsource.gdpr.postgresql",
    "SQLiteKeyStore": "eventsource.gdpr.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventsource.gdpr' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
