"""`KeyStore`: where the key of each data subject lives. Deleting a key forgets the subject.

Every backend passes `eventsource.testing.KeyStoreContract`. Keys are 32 random bytes (AES-256)
made by the store itself (`os.urandom`), so backends need no cryptography package.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Collection

from eventsource._internal.closing import AsyncClosing

__all__ = ["KeyStore", "new_key"]


def new_key() -> bytes:
    """A fresh random subject key (32 bytes)."""
    return os.urandom(32)


class KeyStore(AsyncClosing, ABC):
    """The keys of data subjects, one per subject.

    `get_or_create_keys` must be safe against concurrent callers, also in other processes:
    two writers creating the first key of one subject at once both get the same key (the
    first to commit wins; the other reads it back), never two keys for one subject.
    """

    @abstractmethod
    async def get_keys(self, subjects: Collection[str]) -> dict[str, bytes]:
        """The keys of those of `subjects` that have one (forgotten ones are absent)."""

    @abstractmethod
    async def get_or_create_keys(self, subjects: Collection[str]) -> dict[str, bytes]:
        """The key of every subject in `subjects`, creating the missing ones."""

    @abstractmethod
    async def delete_key(self, subject: str) -> bool:
        """Delete the subject's key (crypto-shredding): True when there was one."""
