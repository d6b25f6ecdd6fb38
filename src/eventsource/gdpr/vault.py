"""`PersonalDataVault`: seals and opens the personal fields of events, forgets subjects.

Keys are looked up asynchronously (a key store is I/O) while pydantic serializes
synchronously, so the vault works on whole events before and after the codec runs: `seal`
fetches (or creates) the keys of every subject of a batch in one call, then returns copies
whose personal fields hold `Sealed` tokens; the codec writes those tokens like any string.
`open` fetches the keys of a batch's subjects in one call and returns copies holding the
plain values again, or the erased marker where a subject's key is gone. Events without
personal fields are returned as they are (one dict lookup per event).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from eventsource.events.base import DomainEvent
from eventsource.exceptions import DecryptionError, PersonalDataError
from eventsource.gdpr._cache import KeyCache
from eventsource.gdpr._plan import PersonalField, personal_fields
from eventsource.gdpr.cipher import InvalidToken, associated_data, open_token, seal_value
from eventsource.gdpr.interface import KeyStore
from eventsource.gdpr.values import ErasedData, ErasedText, Sealed

__all__ = ["PersonalDataVault"]

E = TypeVar("E", bound=DomainEvent)


class PersonalDataVault:
    """Encrypts personal fields with one AES-GCM key per data subject, kept in `keys`.

    Keys are cached in this process: at most `cache_size` of them, each for at most
    `cache_ttl` seconds, so a subject forgotten by another process is no longer readable here
    once `cache_ttl` has passed (`forget` in this process evicts at once).
    """

    def __init__(
        self, keys: KeyStore, *, cache_size: int = 10_000, cache_ttl: float = 300.0
    ) -> None:
        self.keys = keys
        self._cache = KeyCache(cache_size, cache_ttl)

    async def _keys_of(self, subjects: set[str], *, create: bool) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        missing = []
        for subject in subjects:
            key = self._cache.get(subject)
            if key is None:
                missing.append(subject)
            else:
                found[subject] = key
        if missing:
            if create:
                fetched = await self.keys.get_or_create_keys(missing)
            else:
                fetched = await self.keys.get_keys(missing)
            self._cache.put_all(fetched.items())
            found.update(fetched)
        return found

    async def seal(self, events: Sequence[E]) -> list[E]:
        """Copies of `events` whose personal values are sealed with their subjects' keys
        (created for subjects that have none yet). Raises `PersonalDataError` for an event
        with a personal value but no subject."""
        work: list[tuple[int, PersonalField, str, Any]] = []
        for index, event in enumerate(events):
            for field in personal_fields(type(event)):
                value = event.__dict__[field.name]
                if value is None or isinstance(value, Sealed | ErasedData | ErasedText):
                    continue
                subject = field.subject_of(event)
                if subject is None:
                    raise PersonalDataError(
                        f"{event.event_type} {event.event_id}: personal field {field.name!r} "
                        f"is set but its subject field {field.subject_field!r} is None; set "
                        "the subject (or leave the personal value None) before appending"
                    )
                work.append((index, field, subject, value))
        if not work:
            return list(events)
        keys = await self._keys_of({subject for _, _, subject, _ in work}, create=True)
        updates: dict[int, dict[str, Any]] = {}
        for index, field, subject, value in work:
            event = events[index]
            aad = associated_data(event.event_id, event.event_type, field.name, subject)
            token = seal_value(keys[subject], field.adapter.dump_json(value), aad)
            updates.setdefault(index, {})[field.name] = Sealed(token)
        return [
            _with(event, updates[i]) if i in updates else event for i, event in enumerate(events)
        ]

    async def open(self, events: Sequence[E]) -> list[E]:
        """Copies of `events` whose sealed values are opened: the plain value, or the field's
        erased marker when the subject's key is gone. Raises `DecryptionError` for a value
        that does not authenticate (altered, sealed with another key, moved between
        fields, event types or subjects)."""
        work: list[tuple[int, PersonalField, str, Sealed]] = []
        for index, event in enumerate(events):
            for field in personal_fields(type(event)):
                held = event.__dict__[field.name]
                if isinstance(held, Sealed):
                    subject = field.subject_of(event)
                    if subject is None:
                        raise DecryptionError("", event.event_type, field.name)
                    work.append((index, field, subject, held))
        if not work:
            return list(events)
        keys = await self._keys_of({subject for _, _, subject, _ in work}, create=False)
        updates: dict[int, dict[str, Any]] = {}
        for index, field, subject, sealed in work:
            event = events[index]
            key = keys.get(subject)
            if key is None:
                value: Any = field.erased
            else:
                aad = associated_data(event.event_id, event.event_type, field.name, subject)
                try:
                    value = field.adapter.validate_json(open_token(key, sealed.token, aad))
                except InvalidToken:
                    raise DecryptionError(subject, event.event_type, field.name) from None
            updates.setdefault(index, {})[field.name] = value
        return [
            _with(event, updates[i]) if i in updates else event for i, event in enumerate(events)
        ]

    async def forget_key(self, subject: str) -> bool:
        """Delete the subject's key (here and in the key store): every value sealed with it
        reads as erased from now on. True when there was a key. `forget` also removes the
        snapshots that could hold the subject's data."""
        self._cache.discard(subject)
        deleted = await self.keys.delete_key(subject)
        self._cache.discard(subject)
        return deleted

    async def close(self) -> None:
        """Close the key store."""
        await self.keys.close()


def _with(event: E, values: dict[str, Any]) -> E:
    """A copy of `event` holding `values` (not validated again: they are a sealed or opened
    form of what it held). `model_copy(update=...)` cannot be used: it updates the fields-set
    in place, which a store's lean read leaves frozen."""
    copy = event.model_copy()
    copy.__dict__.update(values)
    return copy
