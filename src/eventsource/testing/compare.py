"""Comparing events and read models the way a test means them, with a readable diff.

An expected event says what matters by what it sets: its class and its business fields are
always compared; of the envelope (event id, timestamps, aggregate id and version, tenant,
correlation, causation, metadata) only the fields the expected event was given explicitly
(pydantic's `model_fields_set`) are compared. So `MoneyDeposited(amount=5)` matches the
event an aggregate raised whatever id, time and version it got, and
`MoneyDeposited(amount=5, aggregate_version=2)` pins the version too. An expected item may
also be an event class, which matches any event of that class.

A mismatch raises `AssertionError` whose message lists every position, expected against
actual, field by field (nested models, dicts and lists by path), so a failing test says
what differs without a debugger. pytest shows the message as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from pydantic import BaseModel

from eventsource.events.base import DomainEvent
from eventsource.stores.interface import StoredEvent

__all__ = [
    "ENVELOPE_FIELDS",
    "ExpectedEvent",
    "assert_events_equal",
    "assert_state_equal",
    "describe_event",
    "event_differences",
    "events_match",
    "value_differences",
]

ENVELOPE_FIELDS = frozenset(DomainEvent.model_fields)
"""The fields every event has; compared only where an expected event sets them."""

ExpectedEvent: TypeAlias = DomainEvent | type[DomainEvent]
"""An expected event: an instance (its class, business fields and the envelope fields it
sets are compared) or an event class (any event of that class matches)."""

_HINT = (
    "(business fields are compared; envelope fields such as ids, timestamps and versions "
    "only where an expected event sets them)"
)


def _as_event(item: DomainEvent | StoredEvent) -> DomainEvent:
    return item.event if isinstance(item, StoredEvent) else item


def _compared_fields(expected: DomainEvent) -> list[str]:
    own = [name for name in type(expected).model_fields if name not in ENVELOPE_FIELDS]
    chosen = sorted(expected.model_fields_set & ENVELOPE_FIELDS - {"event_type"})
    return own + chosen


def value_differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Lines `path: expected X, actual Y` for every difference between two values; pydantic
    models and mappings are compared field by field, lists item by item."""
    if isinstance(expected, BaseModel) and isinstance(actual, BaseModel):
        if type(expected) is not type(actual):
            return [f"{path or 'value'}: expected {expected!r}, actual {actual!r}"]
        lines: list[str] = []
        for name in type(expected).model_fields:
            lines += value_differences(
                getattr(expected, name), getattr(actual, name), _join(path, name)
            )
        return lines
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        lines = []
        for key in [*expected, *(k for k in actual if k not in expected)]:
            where = _join(path, repr(key) if not isinstance(key, str) else key)
            if key not in actual:
                lines.append(f"{where}: expected {expected[key]!r}, actual missing")
            elif key not in expected:
                lines.append(f"{where}: not expected, actual {actual[key]!r}")
            else:
                lines += value_differences(expected[key], actual[key], where)
        return lines
    if _is_list(expected) and _is_list(actual):
        if len(expected) != len(actual):
            return [
                f"{path or 'value'}: expected {len(expected)} items {expected!r}, "
                f"actual {len(actual)} items {actual!r}"
            ]
        lines = []
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            lines += value_differences(want, got, f"{path}[{index}]")
        return lines
    if expected == actual and type(expected) is type(actual):
        return []
    if expected == actual and not isinstance(expected, bool | type(None)):
        return []  # 1 == 1.0, Decimal("1") == 1: equal values of interchangeable types
    return [f"{path or 'value'}: expected {expected!r}, actual {actual!r}"]


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def event_differences(expected: ExpectedEvent, actual: DomainEvent | StoredEvent) -> list[str]:
    """Why `actual` does not match `expected` (empty when it does), one line per field."""
    event = _as_event(actual)
    if isinstance(expected, type):
        if isinstance(event, expected):
            return []
        return [f"expected any {expected.__name__}, actual {describe_event(event)}"]
    if type(event) is not type(expected):
        return [
            f"expected {describe_event(expected, envelope=True)}, actual {describe_event(event)}"
        ]
    lines: list[str] = []
    for name in _compared_fields(expected):
        lines += value_differences(getattr(expected, name), getattr(event, name), name)
    return lines


def events_match(expected: ExpectedEvent, actual: DomainEvent | StoredEvent) -> bool:
    """True when `actual` is what `expected` describes (see the module docstring)."""
    return not event_differences(expected, actual)


def describe_event(event: ExpectedEvent | StoredEvent, *, envelope: bool = False) -> str:
    """`Type(field=value, ...)`: the business fields, and with `envelope` the envelope fields
    the event was given explicitly (what an expected event is compared on)."""
    if isinstance(event, type):
        return f"any {event.__name__}"
    event = _as_event(event)
    names = (
        _compared_fields(event)
        if envelope
        else [name for name in type(event).model_fields if name not in ENVELOPE_FIELDS]
    )
    shown = ", ".join(f"{name}={getattr(event, name)!r}" for name in names)
    return f"{type(event).__name__}({shown})"


def assert_events_equal(
    actual: Iterable[DomainEvent | StoredEvent],
    expected: Sequence[ExpectedEvent],
    *,
    what: str = "events",
) -> None:
    """Assert that `actual` holds exactly the `expected` events, in order.

    `actual` may hold `DomainEvent`s or `StoredEvent`s (as a store reads them). Raises
    `AssertionError` listing every position that differs, field by field; `what` names the
    events in the message ("events raised", "stream ...").
    """
    got = [_as_event(item) for item in actual]
    want = list(expected)
    lines: list[str] = []
    for index in range(max(len(got), len(want))):
        number = f"  [{index + 1}]"
        if index >= len(got):
            lines.append(f"{number} missing: expected {describe_event(want[index], envelope=True)}")
        elif index >= len(want):
            lines.append(f"{number} unexpected: {describe_event(got[index])}")
        else:
            differences = event_differences(want[index], got[index])
            if not differences:
                lines.append(f"{number} {type(got[index]).__name__}: as expected")
            elif len(differences) == 1 and differences[0].startswith("expected "):
                lines.append(f"{number} {differences[0]}")
            else:
                lines.append(f"{number} {type(got[index]).__name__}:")
                lines += [f"        {line}" for line in differences]
    if any(not line.endswith(": as expected") for line in lines):
        raise AssertionError(
            f"{what} differ from what was expected ({len(want)} expected, {len(got)} actual):\n"
            + "\n".join(lines)
            + f"\n{_HINT}"
        )


def assert_state_equal(actual: Any, expected: Any, *, what: str = "state") -> None:
    """Assert that `actual` equals `expected` (pydantic models, mappings, lists, values),
    raising `AssertionError` with one line per differing field."""
    differences = value_differences(expected, actual)
    if differences:
        raise AssertionError(
            f"{what} differs from what was expected:\n"
            + "\n".join(f"  {line}" for line in differences)
        )
