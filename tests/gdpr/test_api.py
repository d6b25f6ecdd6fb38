"""The public names of `eventsource.gdpr`, and what importing it loads."""

from __future__ import annotations

import subprocess
import sys

import eventsource.gdpr

EXPECTED = {
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
}


def test_public_names_are_pinned_and_resolve() -> None:
    assert set(eventsource.gdpr.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(eventsource.gdpr, name) is not None


def test_marking_fields_needs_neither_cryptography_nor_a_driver() -> None:
    """Event modules import `PersonalData`; that must not load cryptography or a driver."""
    code = (
        "import sys, eventsource, eventsource.gdpr\n"
        "from eventsource.gdpr import PersonalData, ERASED, is_erased\n"
        "loaded = [m for m in ('cryptography', 'asyncpg', 'aiosqlite') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
