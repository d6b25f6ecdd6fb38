"""Read models: pydantic models kept by id for the read side, the `ReadModelRepository`
interface and its backends, and `ReadModelProjection`, which maintains them from events.

Backends with a third-party driver are imported on first attribute access, so importing this
package never imports a driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource.readmodels.in_memory import InMemoryReadModelRepository
from eventsource.readmodels.interface import ReadModelRepository, default_table
from eventsource.readmodels.projection import ReadModelProjection

if TYPE_CHECKING:
    from eventsource.readmodels.postgresql import PostgreSQLReadModelRepository
    from eventsource.readmodels.sqlite import SQLiteReadModelRepository

__all__ = [
    "InMemoryReadModelRepository",
    "PostgreSQLReadModelRepository",
    "ReadModelProjection",
    "ReadModelRepository",
    "SQLiteReadModelRepository",
    "default_table",
]

_LAZY = {
    "PostgreSQLReadModelRepository": "eventsource.readmodels.postgresql",
    "SQLiteReadModelRepository": "eventsource.readmodels.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
