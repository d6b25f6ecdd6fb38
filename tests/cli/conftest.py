"""A store URL per backend for the data commands' tests (`store_url`)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store: a SQLite file, or a PostgreSQL schema of the test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    postgres_url: str = request.getfixturevalue("postgres_url")
    schema: str = request.getfixturevalue("schema")
    return f"{postgres_url}?schema={schema}"
