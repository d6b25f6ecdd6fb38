"""The library's own append statement, recorded once and replayed by a raw "same schema" side.

The same-schema baseline must run exactly what the library sends, also after someone changes
the statement, its parameters or the stored payload. Copying the SQL text by hand goes stale,
so instead we record one library append whose values we chose (`Probe`): the driver call's
statement and arguments. Each argument is then matched against the probe's values (stream id,
aggregate type, base version, event id, event type, timestamp, payload) and becomes a slot of
an `ArgTemplate`; whatever matches nothing is a constant (lock keys, the NOTIFY channel, event
schema versions, empty tenants). The raw side then builds the arguments of a new append from
the template with plain Python, and its payloads with `json.dumps` of the library's stored
payload shape (whatever keys the library stores: a full envelope or the domain fields only).

The payloads may travel as one argument per event (an array) or as one JSON array text for
the whole batch (what the PostgreSQL store sends); the raw side then joins its json.dumps
texts into such an array. If the library's append no longer fits this scheme,
`ArgTemplate.of` raises and names what it could not place: update this module then.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

__all__ = ["ArgTemplate", "Probe", "column_index", "recording", "sqlite_timestamp"]


def sqlite_timestamp(value: datetime) -> str:
    """The text form of a timestamp in the library's SQLite store (fixed-width UTC)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Probe:
    """The values of the recorded append: one event appended after version `base`."""

    aggregate_id: UUID
    aggregate_type: str
    base: int
    event_id: UUID
    event_type: str
    amount: int
    at: datetime


@contextlib.contextmanager
def recording(cls: type, *methods: str) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Record (statement, arguments) of every call of `cls.<method>` in the block.

    asyncpg methods take the arguments spread (`fetch(sql, *args)`), aiosqlite's `execute`
    takes them as one sequence: both are recorded as a flat tuple."""
    calls: list[tuple[str, tuple[Any, ...]]] = []
    saved = {name: getattr(cls, name) for name in methods}

    def wrap(original: Any) -> Any:
        def recorder(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
            flat = tuple(args[0]) if len(args) == 1 and isinstance(args[0], list | tuple) else args
            calls.append((sql, flat))
            return original(self, sql, *args, **kwargs)

        return recorder

    for name, original in saved.items():
        setattr(cls, name, wrap(original))
    try:
        yield calls
    finally:
        for name, original in saved.items():
            setattr(cls, name, original)


def column_index(sql: str, name: str) -> int:
    """Where the column `name` is in the SELECT list of the recorded statement `sql` (the
    first item that mentions it, so `payload::text` or an expression over it count)."""
    head = sql[sql.index("SELECT ") + 7 : sql.index(" FROM ")]
    items, depth, item = [], 0, ""
    for char in head:  # split on the commas outside parentheses
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += char
    items.append(item)
    for n, text in enumerate(items):
        if re.search(rf"\b{name}\b", text):
            return n
    raise ValueError(f"the library's read has no {name} column: {sql}")


# Slot kinds: what a recorded argument stands for.
_AGGREGATE, _TYPE, _BASE, _VERSION = "aggregate", "aggregate_type", "base", "version"
_EVENT_ID, _EVENT_TYPE, _AT, _PAYLOAD, _CONST = "event_id", "event_type", "at", "payload", "const"
_AMOUNT = "amount"  # a payload key only
_PAYLOADS = "payloads"  # every payload of the batch in one JSON array text


def _matches(kind: str, value: Any, probe: Probe) -> bool:
    """Whether a value of the recorded payload is the probe's `kind` (for payload keys)."""
    if kind == _EVENT_ID:
        return value == str(probe.event_id)
    if kind == _AGGREGATE:
        return value == str(probe.aggregate_id)
    if kind == _VERSION:
        return value == probe.base + 1 and not isinstance(value, bool)
    if kind == _AMOUNT:
        return value == probe.amount and not isinstance(value, bool)
    if isinstance(value, str) and value[:2].isdigit():
        with contextlib.suppress(ValueError):
            stamp = datetime.fromisoformat(value)
            return stamp.tzinfo is not None and abs(stamp - probe.at) < timedelta(seconds=60)
    return False


@dataclass(frozen=True)
class _Slot:
    kind: str
    per_event: bool  # a list with one element per event (asyncpg arrays)
    text: bool  # ids and timestamps as text (SQLite) rather than UUID / datetime
    value: Any = None  # the constant, for _CONST


class ArgTemplate:
    """How to build the arguments of the recorded statement for other events."""

    def __init__(
        self, slots: list[_Slot], payload: dict[str, Any], probe: Probe, binary: bool
    ) -> None:
        self.slots = slots
        self.payload = payload
        self.binary = binary  # payloads passed as bytes rather than str
        self.payload_keys: dict[str, list[str]] = {
            kind: [key for key, value in payload.items() if _matches(kind, value, probe)]
            for kind in (_EVENT_ID, _AGGREGATE, _VERSION, _AT, _AMOUNT)
        }

    @classmethod
    def of(cls, args: Sequence[Any], probe: Probe) -> ArgTemplate:
        payload: dict[str, Any] | None = None
        binary = False
        slots: list[_Slot] = []
        for arg in args:
            per_event = isinstance(arg, list) and len(arg) > 0
            if per_event and len(arg) != 1:
                raise ValueError(f"the recorded append has a list of {len(arg)} items: {arg!r}")
            value = arg[0] if per_event else arg  # an empty list is a constant
            kind, text = _classify(value, probe, per_event)
            if kind == _PAYLOAD:
                payload = json.loads(value)
                binary = isinstance(value, bytes)
            elif kind == _PAYLOADS:
                payload = json.loads(value)[0]
            slots.append(_Slot(kind, per_event, text, arg if kind == _CONST else None))
        kinds = {slot.kind for slot in slots}
        missing = {_AGGREGATE, _EVENT_ID, _PAYLOAD} - kinds
        if _PAYLOADS in kinds:
            missing.discard(_PAYLOAD)
        if missing or payload is None or not kinds & {_BASE, _VERSION}:
            raise ValueError(
                f"cannot place the library's append arguments (no {sorted(missing)} or no "
                f"version among {args!r}): update benchmarks/_capture.py"
            )
        return cls(slots, payload, probe, binary)

    def payloads(
        self, aggregate_id: UUID, base: int, ids: Sequence[UUID], at: datetime, amounts: list[int]
    ) -> list[Any]:
        """The stored payloads of new events in the recorded shape, built by json.dumps: the
        keys that held the probe's event id, stream id, version, timestamp or amount get the
        new event's."""
        assert self.payload is not None
        keys = self.payload_keys
        stamp = at.isoformat().replace("+00:00", "Z")
        out = []
        for n, (event_id, amount) in enumerate(zip(ids, amounts, strict=True), start=1):
            doc = dict(self.payload)
            for key in keys[_EVENT_ID]:
                doc[key] = str(event_id)
            for key in keys[_AGGREGATE]:
                doc[key] = str(aggregate_id)
            for key in keys[_VERSION]:
                doc[key] = base + n
            for key in keys[_AT]:
                doc[key] = stamp
            for key in keys[_AMOUNT]:
                doc[key] = amount
            text = json.dumps(doc)
            out.append(text.encode() if self.binary else text)
        return out

    def statement_args(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        base: int,
        ids: Sequence[UUID],
        event_type: str,
        at: datetime,
        payloads: list[Any],
    ) -> list[Any]:
        """asyncpg style: one argument per slot, per-event slots as lists."""
        n = len(ids)
        out: list[Any] = []
        for slot in self.slots:
            if slot.kind == _PAYLOADS:
                out.append(f"[{','.join(payloads)}]")
            elif slot.per_event:
                out.append(
                    _per_event(
                        slot, aggregate_id, aggregate_type, base, ids, event_type, at, payloads
                    )
                )
            else:
                out.append(_scalar(slot, aggregate_id, aggregate_type, base, event_type, at, n))
        return out

    def rows(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        base: int,
        ids: Sequence[UUID],
        event_type: str,
        at: datetime,
        payloads: list[Any],
    ) -> list[Any]:
        """SQLite style: the recorded arguments are one row; the flat values of len(ids) rows."""
        columns = [
            _per_event(slot, aggregate_id, aggregate_type, base, ids, event_type, at, payloads)
            for slot in self.slots
        ]
        return [value for row in zip(*columns, strict=True) for value in row]


def _classify(value: Any, probe: Probe, per_event: bool) -> tuple[str, bool]:
    if isinstance(value, UUID):
        if value == probe.aggregate_id:
            return _AGGREGATE, False
        if value == probe.event_id:
            return _EVENT_ID, False
    if isinstance(value, datetime) and abs(value - probe.at) < timedelta(seconds=60):
        return _AT, False
    if isinstance(value, int) and not isinstance(value, bool):
        if value == probe.base:
            return _BASE, False
        if value == probe.base + 1 and not per_event:
            return _VERSION, False
    if isinstance(value, bytes) and value.startswith(b"{"):
        with contextlib.suppress(ValueError):
            if json.loads(value).get("amount") == probe.amount:
                return _PAYLOAD, False
    if isinstance(value, str):
        if value == str(probe.aggregate_id):
            return _AGGREGATE, True
        if value == str(probe.event_id):
            return _EVENT_ID, True
        if value == probe.aggregate_type:
            return _TYPE, True
        if value == probe.event_type:
            return _EVENT_TYPE, True
        if value.startswith("{"):
            with contextlib.suppress(ValueError):
                if json.loads(value).get("amount") == probe.amount:
                    return _PAYLOAD, True
        if value.startswith("[{") and not per_event:
            with contextlib.suppress(ValueError):
                items = json.loads(value)
                if len(items) == 1 and items[0].get("amount") == probe.amount:
                    return _PAYLOADS, True
        with contextlib.suppress(ValueError):
            stamp = datetime.fromisoformat(value)
            if stamp.tzinfo is not None and abs(stamp - probe.at) < timedelta(seconds=60):
                return _AT, True
    return _CONST, False


def _scalar(
    slot: _Slot,
    aggregate_id: UUID,
    aggregate_type: str,
    base: int,
    event_type: str,
    at: datetime,
    n: int,
) -> Any:
    kind = slot.kind
    if kind == _AGGREGATE:
        return str(aggregate_id) if slot.text else aggregate_id
    if kind == _TYPE:
        return aggregate_type
    if kind == _BASE:
        return base
    if kind == _VERSION:
        return base + 1
    if kind == _EVENT_TYPE:
        return event_type
    if kind == _AT:
        return sqlite_timestamp(at) if slot.text else at
    if kind == _CONST:
        return slot.value
    raise ValueError(f"a per-event value ({kind}) recorded as a single argument (n={n})")


def _per_event(
    slot: _Slot,
    aggregate_id: UUID,
    aggregate_type: str,
    base: int,
    ids: Sequence[UUID],
    event_type: str,
    at: datetime,
    payloads: list[Any],
) -> list[Any]:
    kind, n = slot.kind, len(ids)
    if kind == _EVENT_ID:
        return [str(i) for i in ids] if slot.text else list(ids)
    if kind == _PAYLOAD:
        return payloads
    if kind in (_BASE, _VERSION):  # SQLite rows: the version of each event
        return list(range(base + 1, base + 1 + n))
    if kind == _CONST:
        return (slot.value if slot.per_event else [slot.value]) * n
    return [_scalar(slot, aggregate_id, aggregate_type, base, event_type, at, n)] * n
