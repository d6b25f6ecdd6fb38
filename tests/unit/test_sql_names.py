"""PostgreSQL names: the NOTIFY channel fits 63 bytes; quoting refuses what cannot be a name."""

from __future__ import annotations

import pytest

from eventsource._internal.sql import notify_channel, quote_identifier
from eventsource.exceptions import ConfigurationError


def test_short_channel_names_are_unchanged() -> None:
    assert notify_channel("public", "") == "public.events"
    assert notify_channel("app", "shop_") == "app.shop_events"


def test_long_channel_names_fit_in_63_bytes_and_stay_distinct() -> None:
    base = "ü" * 31  # 62 bytes, a legal schema name
    channels = {notify_channel(base, prefix) for prefix in ("a_", "b_", "ü" * 19)}
    assert len(channels) == 3
    for channel in channels:
        assert len(channel.encode()) <= 63
        assert channel.startswith("ü" * 23)  # cut between characters, never inside one


def test_identifiers_with_nul_or_empty_are_configuration_errors() -> None:
    for name in ("", "a\x00b"):
        with pytest.raises(ConfigurationError):
            quote_identifier(name)
