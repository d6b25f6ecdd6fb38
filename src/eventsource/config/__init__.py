"""Backends chosen by configuration: a URL (or environment variables) names the store and the
bus, so an application moves from `memory://` in tests to PostgreSQL and Redis in production
without code changes.

Database URLs (event store, snapshots, checkpoints, dead letters, outbox, inbox):

- `memory://`, option `outbox`;
- `sqlite:///relative.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:` (also
  `sqlite+aiosqlite://`), options `prefix`, `outbox`, `busy_timeout`, `synchronous`;
- `postgresql://user:password@host:port/db` (also `postgres://`, `postgresql+asyncpg://`),
  options `schema`, `prefix`, `outbox`, `notify`, `max_connections`, `transient_retries`,
  `retry_timeout`; other query parameters (`ssl=require`, ...) go to the driver;
- `nats://host:port` (JetStream): the event store (stream `{prefix}events`), snapshots and
  checkpoints (buckets `{prefix}snapshots`, `{prefix}checkpoints`), options `prefix`,
  `replicas`, `duplicate_window`; no dead letters, outbox or inbox.

Bus URLs: `memory://`, `redis://host:port/db` (`rediss://`), `amqp://user:password@host/vhost`
(`amqps://`), `kafka://host:port,host2:port`. Their query parameters are the fields of the bus's
`*Config` (`group`, `consumer` and, for Redis, `prefix` are short for `consumer_group`,
`consumer_name` and `stream_prefix`). Keyword options take the same names and win over the URL.

Parsed values are handed to constructors, never formatted into SQL (the backends quote
identifiers); error messages and reprs show URLs with their passwords masked.
"""

from __future__ import annotations

from eventsource.config._options import mask_url
from eventsource.config.buses import create_event_bus, event_bus_config
from eventsource.config.databases import (
    DatabaseURL,
    create_checkpoint_repository,
    create_dlq_repository,
    create_event_store,
    create_inbox_repository,
    create_outbox_repository,
    create_snapshot_store,
    parse_database_url,
)
from eventsource.config.settings import EventSourceComponents, EventSourceSettings
from eventsource.exceptions import ConfigurationError

__all__ = [
    "ConfigurationError",
    "DatabaseURL",
    "EventSourceComponents",
    "EventSourceSettings",
    "create_checkpoint_repository",
    "create_dlq_repository",
    "create_event_bus",
    "create_event_store",
    "create_inbox_repository",
    "create_outbox_repository",
    "create_snapshot_store",
    "event_bus_config",
    "mask_url",
    "parse_database_url",
]
