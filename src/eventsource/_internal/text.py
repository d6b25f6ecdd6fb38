"""Text the library writes from exception messages, made storable by every backend."""

from __future__ import annotations

import re

__all__ = ["storable_text"]

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """`text` with what a database text column refuses replaced by U+FFFD: NUL characters
    (PostgreSQL rejects 0x00 in text) and lone surrogates (not encodable as UTF-8).

    Use it for everything written from an exception's text (dead letters, an outbox row's
    last error), so that parking a failure never fails because of what the failure says."""
    return _UNSTORABLE.sub("\ufffd", text)
