"""Pairs of store URLs (source, target) on real backends; PostgreSQL schemas are dropped
after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from uuid import uuid4

import pytest

from tests import _services

PAIRS = [
    pytest.param(("sqlite", "postgresql"), marks=[pytest.mark.sqlite, pytest.mark.postgresql]),
    pytest.param(("postgresql", "postgresql"), marks=pytest.mark.postgresql),
    pytest.param(("postgresql", "sqlite"), marks=[pytest.mark.sqlite, pytest.mark.postgresql]),
]


@pytest.fixture
async def make_url(tmp_path: Path) -> AsyncIterator[Callable[[str], str]]:
    """`make_url(kind)`: the URL of a new empty store of that kind."""
    schemas: list[str] = []

    def make(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / uuid4().hex}.db"
        _services.require(_services.POSTGRES)
        schema = f"es_mig_{uuid4().hex[:12]}"
        schemas.append(schema)
        return f"{_services.POSTGRES_URL}?schema={schema}"

    yield make
    if schemas:
        import asyncpg

        conn = await asyncpg.connect(_services.POSTGRES_URL)
        try:
            for schema in schemas:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture(params=PAIRS, ids=lambda pair: "-to-".join(pair))
def urls(request: pytest.FixtureRequest, make_url: Callable[[str], str]) -> tuple[str, str]:
    """(source URL, target URL)."""
    source, target = request.param
    return make_url(source), make_url(target)
