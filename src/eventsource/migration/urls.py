"""A `StoreMigration` between two database URLs (what `eventsource migrate` runs).

Stores come from `eventsource.config` URLs (`sqlite:///path`, `postgresql://...?schema=x`,
`memory://`). The migration checkpoint lives in the target database's checkpoint table by
default (`state_url` names another database), so the copy's progress is durable where the
events go. The target's tables are created if needed (PostgreSQL); the source is only read.
The stores get an empty event registry: a migration copies stored rows and never needs the
application's event classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

from eventsource.config import (
    DatabaseURL,
    create_checkpoint_repository,
    create_event_store,
    parse_database_url,
)
from eventsource.events.registry import EventRegistry
from eventsource.migration.copier import StoreMigration

__all__ = ["open_migration"]


@contextlib.asynccontextmanager
async def open_migration(
    from_url: str,
    to_url: str,
    *,
    state_url: str | None = None,
    tenant_id: UUID | None = None,
    name: str | None = None,
    batch_size: int = 500,
    registry: EventRegistry | None = None,
) -> AsyncIterator[StoreMigration]:
    """The migration from `from_url` to `to_url`, its stores closed on exit.

    `ConfigurationError` for a URL that names no store; both URLs naming the same database
    and prefix is refused too (the copy would read what it writes)."""
    from eventsource.exceptions import ConfigurationError

    source_db, target_db = parse_database_url(from_url), parse_database_url(to_url)
    if _where(source_db) is not None and _where(source_db) == _where(target_db):
        raise ConfigurationError(
            f"--from and --to name the same store ({source_db.description}): give the target "
            "another database, schema or prefix"
        )
    registry = registry if registry is not None else EventRegistry()
    state_url = state_url or to_url
    async with contextlib.AsyncExitStack() as stack:
        source = await stack.enter_async_context(create_event_store(from_url, registry=registry))
        target = await stack.enter_async_context(create_event_store(to_url, registry=registry))
        state = await stack.enter_async_context(create_checkpoint_repository(state_url))
        for part in (target, state):
            create_schema = getattr(part, "create_schema", None)
            if create_schema is not None:
                await create_schema()
        yield StoreMigration(
            source, target, state=state, name=name, tenant_id=tenant_id, batch_size=batch_size
        )


def _where(database: DatabaseURL) -> tuple[str, ...] | None:
    """What identifies the tables a URL names (None: nothing another URL can share)."""
    if database.backend == "memory" or database.path == ":memory:":
        return None
    if database.backend == "sqlite":
        return ("sqlite", str(Path(database.path).resolve()), database.prefix)
    return (database.backend, database.driver_url, database.schema, database.prefix)
