"""`InMemoryKeyStore`: subject keys in a dict, for tests and single-process tools."""

from __future__ import annotations

from collections.abc import Collection

from eventsource.gdpr.interface import KeyStore, new_key

__all__ = ["InMemoryKeyStore"]


class InMemoryKeyStore(KeyStore):
    """Keys in this process's memory (gone when it ends: only for tests and demos). Stores
    built with the same `keys` dict share their keys."""

    def __init__(self, keys: dict[str, bytes] | None = None) -> None:
        self._keys: dict[str, bytes] = {} if keys is None else keys

    async def get_keys(self, subjects: Collection[str]) -> dict[str, bytes]:
        return {s: self._keys[s] for s in subjects if s in self._keys}

    async def get_or_create_keys(self, subjects: Collection[str]) -> dict[str, bytes]:
        return {s: self._keys.setdefault(s, new_key()) for s in subjects}

    async def delete_key(self, subject: str) -> bool:
        return self._keys.pop(subject, None) is not None
