"""Option values from URLs and keywords: conversion to the fields' types, and masking of secrets."""

from __future__ import annotations

import contextlib
import types
import typing
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit
from uuid import UUID

from eventsource.exceptions import ConfigurationError

if TYPE_CHECKING:
    pass


_SECRET_WORDS = ("password", "secret", "token")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def is_secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def mask_url(url: str) -> str:
    """`url` with its password (and query values named like a secret) replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    masked = url
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        masked = masked.replace(parts.netloc, f"{userinfo.partition(':')[0]}:***@{host}", 1)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(is_secret(key) for key, _ in query):
        hidden = [(key, "***" if is_secret(key) else value) for key, value in query]
        masked = masked.replace(parts.query, urlencode(hidden), 1)
    return masked


def convert(value: object, hint: Any) -> object:
    """`value` as the type `hint` names, read from text when it is text (URL queries,
    environment variables); `ValueError` saying what was expected."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        for choice in typing.get_args(hint):
            if value == choice or (isinstance(value, str) and value == str(choice)):
                return choice
        raise ValueError(f"expected one of {', '.join(map(repr, typing.get_args(hint)))}")
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
            return None
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return convert(value, inner)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ValueError("expected true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return parse_number(value, int, "an integer")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return parse_number(value, float, "a number")
    if hint is UUID:
        return value if isinstance(value, UUID) else UUID(str(value))
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError("expected text")
    if isinstance(value, str):
        raise ValueError("cannot be given as text; pass it as a keyword option")
    return value


def parse_number(value: object, kind: type[int] | type[float], expected: str) -> object:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return kind(value)
    raise ValueError(f"expected {expected}")


def read_options(
    where: str,
    query: list[tuple[str, str]],
    keywords: Mapping[str, object],
    accepted: Mapping[str, Any],
    aliases: Mapping[str, str] | None = None,
    *,
    pass_through: bool = False,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The options of a URL query merged with keyword options (keywords win), converted to
    the types `accepted` names; and, with `pass_through`, the query parameters left over for
    the driver (else those are an error)."""
    aliases = aliases or {}
    given: dict[str, object] = {}
    left: list[tuple[str, str]] = []
    unknown: list[str] = []
    for key, value in query:
        name = aliases.get(key, key)
        if name in given:
            raise ConfigurationError(f"{where}: give the {key} once (?{key}=...)")
        if name in accepted:
            given[name] = value
        elif pass_through:
            left.append((key, value))
        else:
            unknown.append(key)
    from_keywords: set[str] = set()
    for key, keyword in keywords.items():
        name = aliases.get(key, key)
        if name in from_keywords:
            raise ConfigurationError(f"{where}: {name} is given twice (once by an alias)")
        if name in accepted:
            given[name] = keyword
            from_keywords.add(name)
        else:
            unknown.append(key)
    if unknown:
        raise ConfigurationError(
            f"{where}: no query options or keywords named {', '.join(map(repr, unknown))}; "
            f"the accepted ones are {', '.join(sorted({*accepted, *aliases}))}"
        )
    converted: dict[str, Any] = {}
    for name, raw in given.items():
        try:
            converted[name] = convert(raw, accepted[name])
        except ValueError as exc:
            raise ConfigurationError(f"{where}: option {name}={raw!r}: {exc}") from None
    return converted, left


@contextlib.contextmanager
def building(where: str) -> Iterator[None]:
    """Constructor errors as `ConfigurationError`: a missing driver (the message names the
    pip extra) or a value the backend refuses."""
    try:
        yield
    except ConfigurationError:
        raise
    except ImportError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
