"""Which failures are the infrastructure's (retried until they pass) and which are an event's.

A subscription must outlive a database restart, a killed connection or a broker hiccup: such
failures are retried with backoff until they end, and never dead-letter an event. Only a
handler's own failure (a bug, an event it refuses) goes through retries to the dead-letter
queue. The test is by type and by duck typing (no driver is imported here): the library's
`TransientStoreError` (a lost connection, a serialization failure, a deadlock), Python's
`ConnectionError` (also `BusConnectionError`), a SQLAlchemy error whose connection was
invalidated, and PostgreSQL's connection, shutdown and resource SQLSTATEs, anywhere in the
error's cause chain (`DatabaseProjection` raises SQLAlchemy's errors as they come).
"""

from __future__ import annotations

from eventsource.exceptions import TransientStoreError

__all__ = ["is_infrastructure_error"]

# 08: connection exception; 53: insufficient resources (too many connections, disk full);
# 57P01-57P03: admin shutdown, crash shutdown, cannot connect now (starting up).
_SQLSTATE_PREFIXES = ("08", "53", "57P01", "57P02", "57P03")


def is_infrastructure_error(exc: BaseException) -> bool:
    """Whether `exc` (or an error in its cause chain) says the storage or the network
    failed, rather than the code or the data."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TransientStoreError | ConnectionError):
            return True
        if getattr(current, "connection_invalidated", False) is True:
            return True
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_SQLSTATE_PREFIXES):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False
