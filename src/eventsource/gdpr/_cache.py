"""A bounded cache of subject keys: least recently used out first, and no entry older than
its time to live, so a key deleted by another process stops being used within `ttl` seconds.
Only keys that exist are cached (an absent key is asked for again: another process may have
created it meanwhile)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

__all__ = ["KeyCache"]


class KeyCache:
    __slots__ = ("_clock", "_entries", "max_size", "ttl")

    def __init__(
        self, max_size: int, ttl: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_size < 0 or ttl < 0:
            raise ValueError("the key cache needs max_size >= 0 and ttl >= 0")
        self.max_size = max_size
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, subject: str) -> bytes | None:
        entry = self._entries.get(subject)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[subject]
            return None
        self._entries.move_to_end(subject)
        return entry[1]

    def put_all(self, keys: Iterable[tuple[str, bytes]]) -> None:
        if self.max_size == 0 or self.ttl == 0:
            return
        expires = self._clock() + self.ttl
        for subject, key in keys:
            self._entries[subject] = (expires, key)
            self._entries.move_to_end(subject)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def discard(self, subject: str) -> None:
        self._entries.pop(subject, None)
