"""Every module path of the package guide's tree imports (its `migrations/schemas` and
`migrations/templates` are folders of SQL and Alembic files, not modules), and the package
ships its PEP 561 marker."""

from __future__ import annotations

import importlib
from importlib import resources

import pytest

GUIDE_TREE = [
    "eventsource",
    "eventsource.types",
    "eventsource.exceptions",
    "eventsource.config",
    "eventsource.events",
    "eventsource.events.base",
    "eventsource.events.registry",
    "eventsource.stores",
    "eventsource.stores.interface",
    "eventsource.stores.in_memory",
    "eventsource.stores.postgresql",
    "eventsource.aggregates",
    "eventsource.aggregates.base",
    "eventsource.aggregates.repository",
    "eventsource.projections",
    "eventsource.projections.base",
    "eventsource.projections.decorators",
    "eventsource.projections.protocols",
    "eventsource.projections.coordinator",
    "eventsource.repositories",
    "eventsource.repositories._json",
    "eventsource.repositories.checkpoint",
    "eventsource.repositories.dlq",
    "eventsource.repositories.outbox",
    "eventsource.bus",
    "eventsource.bus.interface",
    "eventsource.bus.memory",
    "eventsource.bus.redis",
    "eventsource.migrations",
]


@pytest.mark.parametrize("module", GUIDE_TREE)
def test_every_module_of_the_guide_tree_imports(module: str) -> None:
    assert importlib.import_module(module).__name__ == module


def test_the_package_is_typed() -> None:
    assert resources.files("eventsource").joinpath("py.typed").is_file()
