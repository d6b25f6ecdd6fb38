"""`EventSourceJSONEncoder`: `json` for the values event-sourced applications carry.

Events serialize themselves through pydantic; this encoder is for everything around them that
goes through the standard `json` module: API responses, log records, message headers, read
model documents holding ids, timestamps and amounts. Each type is written so that it can be
read back without loss, which decides two choices:

* `Decimal` becomes a string (`"10.10"`), not a number: a JSON number is read back as a float
  by most parsers, which loses precision and the trailing zeros that carry scale (money).
  Read it back with `Decimal(text)`.
* `bytes` (and `bytearray`, `memoryview`) become standard base64 text with padding (RFC 4648
  section 4), the most widely decodable encoding; read back with `base64.b64decode`.

Datetimes, dates and times are ISO 8601 (`isoformat()`), keeping the UTC offset (a naive
value stays naive; a `ZoneInfo` zone is written as its offset at that instant, since ISO 8601
has no zone names), so `datetime.fromisoformat` restores the same instant and offset. UUIDs
are their canonical text, enums their value (encoded in turn), pydantic models
`model_dump(mode="json")`, sets and frozensets a list, sorted when their items can be compared
so equal sets give equal text. Anything else raises `TypeError`, as `json` does.
"""

from __future__ import annotations

import base64
import enum
import json
from datetime import date, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel

__all__ = ["EventSourceJSONEncoder", "dumps"]


class EventSourceJSONEncoder(json.JSONEncoder):
    """A `json.JSONEncoder` for UUIDs, datetimes, decimals, enums, pydantic models, sets and
    bytes: `json.dumps(value, cls=EventSourceJSONEncoder)` or `dumps(value)`."""

    def default(self, o: Any) -> Any:
        if isinstance(o, UUID):
            return str(o)
        if isinstance(o, date | time):  # datetime is a date
            return o.isoformat()
        if isinstance(o, Decimal):
            return str(o)
        if isinstance(o, enum.Enum):
            return o.value
        if isinstance(o, BaseModel):
            return o.model_dump(mode="json")
        if isinstance(o, set | frozenset):
            try:
                return sorted(o)
            except TypeError:  # items of mixed or unordered types: iteration order
                return list(o)
        if isinstance(o, bytes | bytearray | memoryview):
            return base64.b64encode(o).decode("ascii")
        return super().default(o)


def dumps(
    obj: Any,
    *,
    indent: int | str | None = None,
    sort_keys: bool = False,
    separators: tuple[str, str] | None = None,
    ensure_ascii: bool = True,
) -> str:
    """`json.dumps` with `EventSourceJSONEncoder`; the options mean what they mean there."""
    return json.dumps(
        obj,
        cls=EventSourceJSONEncoder,
        indent=indent,
        sort_keys=sort_keys,
        separators=separators,
        ensure_ascii=ensure_ascii,
    )
