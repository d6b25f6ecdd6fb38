"""Fixtures of the fault suite: a throw-away PostgreSQL cluster, a database of its own per
test, a proxy in front of it, and the shared server's URL for connection kills.

Every test here is marked `faults` (and `postgresql`): ``pytest -m faults`` runs the suite.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import pytest

from tests import _services
from tests.faults._cluster import BIN, ClusterError, ThrowawayCluster
from tests.faults._proxy import PostgresProxy


@pytest.fixture(scope="session")
def cluster() -> Iterator[ThrowawayCluster]:
    """A PostgreSQL cluster of the session's own, on a free loopback port; tests may stop,
    crash and restart it (each test works in a database of its own: `cluster_database`)."""
    if not (BIN / "initdb").exists() or not hasattr(os, "geteuid"):
        _services.unavailable(f"no PostgreSQL 15 binaries in {BIN} for a throw-away cluster")
    server = ThrowawayCluster()
    try:
        try:
            server.create()
        except ClusterError as exc:
            _services.unavailable(f"the throw-away PostgreSQL cluster did not start: {exc}")
        yield server
    finally:
        server.remove()


@pytest.fixture
async def cluster_database(cluster: ThrowawayCluster) -> AsyncIterator[str]:
    """A fresh database on the throw-away cluster (dropped afterwards); its name."""
    import asyncpg

    if not cluster.running:
        cluster.start()  # a test that failed while the server was stopped
    name = f"es_fault_{uuid4().hex[:12]}"
    admin = await asyncpg.connect(cluster.url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield name
    if not cluster.running:
        cluster.start()
    admin = await asyncpg.connect(cluster.url())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def proxy(cluster: ThrowawayCluster) -> AsyncIterator[PostgresProxy]:
    """A proxy to the throw-away cluster (passing everything through until told otherwise)."""
    server = PostgresProxy(cluster.port)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
