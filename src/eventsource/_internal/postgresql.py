"""PostgreSQL helpers shared by the PostgreSQL backends: URLs, engines and error mapping.

asyncpg is imported lazily inside the functions, so importing this module loads no driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from eventsource._internal.optional import require
from eventsource._internal.retry import backoff_delay
from eventsource.exceptions import (
    EventSourceError,
    EventStoreError,
    SerializationError,
    StoreConnectionError,
    StoreSchemaError,
    TransientStoreError,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

__all__ = [
    "CONNECT_TIMEOUT",
    "ConnectTarget",
    "ConnectionCache",
    "asyncpg_connector",
    "connect_target",
    "connection_of",
    "create_engine",
    "driver_error",
    "engine_behind",
    "engine_of",
    "is_connection_error",
    "is_database_error",
    "map_error",
    "retry_transient",
    "unique_violation",
]

_T = TypeVar("_T")
_RETRY_BASE = 0.01  # seconds before the first retry (at most; full jitter), doubled each time
_RETRY_CAP = 1.0

_TRANSIENT = {"40001": "serialization failure", "40P01": "deadlock detected"}
_SCHEMA = {"42P01", "3F000", "42703"}  # undefined table, undefined schema, undefined column


CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a new connection (the URL's `connect_timeout` overrides it)."""

_ASYNCPG_OPTIONS: dict[str, Callable[[str], Any]] = {
    "statement_cache_size": int,
    "max_cached_statement_lifetime": float,
    "max_cacheable_statement_size": int,
    "command_timeout": float,
}
"""Query options of a URL that are asyncpg `connect()` arguments (libpq's own, such as
`sslmode` or `application_name`, stay in the DSN, which asyncpg parses)."""


@dataclass(frozen=True, slots=True)
class ConnectTarget:
    """Where and how to open asyncpg connections, from a libpq-style URL."""

    dsn: str
    where: str
    timeout: float
    options: dict[str, Any]
    prepared_statement_cache_size: int | None


def connect_target(url: str) -> ConnectTarget:
    """Parse a postgres://, postgresql:// or postgresql+asyncpg:// URL with SQLAlchemy's
    `make_url` (`postgresql:///db`, sockets, `sslmode=...` and the other libpq options are kept
    for asyncpg); `ValueError` for anything else."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    scheme = url.partition("://")[0]
    if scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ValueError(
            "the PostgreSQL store runs on asyncpg: use a postgresql:// or postgresql+asyncpg:// "
            f"URL, not {scheme or url!r}"
        )
    try:
        parsed = make_url(url)
        host = parsed.host or "localhost"
        where = f"{host}:{parsed.port or 5432}/{parsed.database or ''}"
    except (ArgumentError, ValueError):
        # The parser's message quotes the URL, password included: not shown.
        raise ValueError("not a valid PostgreSQL URL") from None
    query = dict(parsed.query)
    options: dict[str, Any] = {}
    timeout = CONNECT_TIMEOUT
    try:
        if "connect_timeout" in query:
            timeout = float(_single(query.pop("connect_timeout")))
        cache_size = query.pop("prepared_statement_cache_size", None)
        prepared = None if cache_size is None else int(_single(cache_size))
        for name, convert in _ASYNCPG_OPTIONS.items():
            if name in query:
                options[name] = convert(_single(query.pop(name)))
    except ValueError as exc:
        raise ValueError(f"a numeric option of the URL is not a number ({exc})") from None
    if not timeout > 0:
        raise ValueError("connect_timeout must be > 0")
    dsn = parsed.set(drivername="postgresql", query=query).render_as_string(hide_password=False)
    return ConnectTarget(dsn, where, timeout, options, prepared)


def _single(value: str | tuple[str, ...]) -> str:
    return value if isinstance(value, str) else value[-1]


def asyncpg_connector(
    target: ConnectTarget, connect_args: dict[str, Any] | None = None
) -> Callable[[], Awaitable[Any]]:
    """An async function opening one asyncpg connection to `target` (`connect_args`: more
    `asyncpg.connect` arguments, winning over the URL's), whose connect timeout names the
    server and the limit (asyncpg's own says nothing)."""
    arguments: dict[str, Any] = {"timeout": target.timeout, **target.options}
    arguments.update(connect_args or {})
    timeout = arguments["timeout"]

    async def connect() -> Any:
        import asyncpg

        try:
            return await asyncpg.connect(target.dsn, **arguments)
        except TimeoutError:
            raise TimeoutError(
                f"no answer from PostgreSQL at {target.where} within {timeout:g} s "
                "(set connect_timeout=SECONDS in the URL to wait longer)"
            ) from None

    return connect


def create_engine(url: str, **engine_kwargs: Any) -> AsyncEngine:
    """A pooled SQLAlchemy engine whose connections asyncpg opens from the URL as libpq reads
    it (TLS by `sslmode`, `sslrootcert`, ...; `connect_timeout`, 10 s by default)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    # SQLAlchemy's asyncio engine needs greenlet; say which extra brings it.
    require("greenlet", extra="postgresql", feature="the PostgreSQL backends")
    target = connect_target(url)
    engine_kwargs.setdefault("pool_size", 10)
    engine_kwargs.setdefault("max_overflow", 10)
    engine_kwargs.setdefault("pool_pre_ping", False)
    connector = asyncpg_connector(target, engine_kwargs.pop("connect_args", None))
    adapter: dict[str, Any] = {}
    if target.prepared_statement_cache_size is not None:
        adapter["prepared_statement_cache_size"] = target.prepared_statement_cache_size
    engine: AsyncEngine | None = None

    def creator() -> Any:
        # SQLAlchemy's `async_creator`, spelled out to keep the adapter's own options.
        assert engine is not None
        dbapi = engine.sync_engine.dialect.dbapi
        assert dbapi is not None
        return dbapi.connect(async_creator_fn=connector, **adapter)

    engine_kwargs.setdefault("creator", creator)
    # The URL only names the dialect and, for people, the server: connections come from
    # `creator`.
    shown = make_url(target.dsn).set(drivername="postgresql+asyncpg", query={})
    engine = create_async_engine(shown, **engine_kwargs)
    return engine


def driver_error(exc: BaseException) -> BaseException:
    """The asyncpg (or OS) exception under SQLAlchemy's wrappers, or `exc` itself."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__module__.startswith("asyncpg"):
            return current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return exc


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def unique_violation(exc: BaseException) -> str | None:
    """The constraint name if `exc` is a unique violation, else None."""
    cause = driver_error(exc)
    if _sqlstate(cause) == "23505":
        return str(getattr(cause, "constraint_name", "") or "")
    return None


def is_connection_error(exc: BaseException) -> bool:
    import asyncpg

    cause = driver_error(exc)
    state = _sqlstate(cause) or ""
    if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return True
    # InternalClientError: the protocol lost its state, as when the server ends the session
    # in the middle of a statement (seen with pg_terminate_backend); the connection is gone.
    broken = asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError
    if isinstance(cause, broken | OSError | ConnectionError):
        return True
    invalidated = getattr(exc, "connection_invalidated", False)
    return bool(invalidated)


def map_error(exc: BaseException, what: str) -> EventSourceError:
    """A typed error for a failed database call; `what` says what was being done."""
    cause = driver_error(exc)
    state = _sqlstate(cause)
    detail = f"{type(cause).__name__}: {cause}"
    if is_connection_error(exc):
        return StoreConnectionError(f"{what}: the connection to PostgreSQL failed ({detail})")
    if state in _TRANSIENT:
        return TransientStoreError(f"{what}: {_TRANSIENT[state]} ({detail}); retry")
    if state in _SCHEMA:
        return StoreSchemaError(
            f"{what}: the store's tables are missing or outdated ({detail}); "
            "run `await store.create_schema()`"
        )
    if state is not None and state.startswith("22"):
        return SerializationError(f"{what}: PostgreSQL rejected the data ({detail})")
    return EventStoreError(f"{what}: {detail}")


def is_database_error(exc: BaseException) -> bool:
    """True for errors of the driver, of SQLAlchemy, or of the network under them."""
    cause = driver_error(exc)
    modules = (type(exc).__module__, type(cause).__module__)
    if any(m.startswith(("asyncpg", "sqlalchemy")) for m in modules):
        return True
    return isinstance(cause, OSError | TimeoutError | ConnectionError)


class ConnectionCache:
    """Connections checked out of a SQLAlchemy engine once and reused for hot statements.

    A checkout from SQLAlchemy's async pool crosses into a greenlet three times (connect, raw
    connection, return), which measured as a fifth of the CPU of a whole load + append command.
    This cache keeps up to `size` pooled connections checked out and hands their asyncpg
    connections around through a semaphore and a list: no greenlet on the hot path. The
    connections still belong to the engine's pool; `close()` returns them. A connection that
    failed is invalidated, never reused.
    """

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        if size < 1:
            raise ValueError(f"the connection cache needs size >= 1, got {size}")
        self.engine = engine
        self.size = size
        self._idle: list[tuple[Any, Any]] = []
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An asyncpg connection in autocommit mode, for the duration of the block."""
        if self._closed:
            raise RuntimeError("the store was closed")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            held = self._idle.pop() if self._idle else await self._open()
            try:
                yield held[1]
            except BaseException as exc:
                await self._settle(held, exc)
                raise
            await self._settle(held, None)

    async def fetch(self, what: str, sql: str, *args: Any) -> list[Any]:
        """The rows of `sql` run on one of the connections, errors typed as by `checkout`.

        What ``async with checkout(what) as conn: await conn.fetch(sql, *args)`` does,
        without its two generator-based context managers: they cost about 7% of the client's
        CPU time of a whole command (a stream read and an append) in a py-spy profile."""
        try:
            if self._closed:
                raise RuntimeError("the store was closed")
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.size)
            async with self._slots:
                held = self._idle.pop() if self._idle else await self._open()
                try:
                    rows: list[Any] = await held[1].fetch(sql, *args)
                except BaseException as exc:
                    await self._settle(held, exc)
                    raise
                await self._settle(held, None)
                return rows
        except EventSourceError:
            raise
        except Exception as exc:
            if is_database_error(exc):
                raise map_error(exc, what) from exc
            raise

    async def _settle(self, held: tuple[Any, Any], exc: BaseException | None) -> None:
        """Back to the idle connections, or thrown away. A server error (a constraint, a
        missing table) leaves the connection usable; a lost connection, a cancellation
        mid-statement or an open transaction does not."""
        raw = held[1]
        if exc is None:
            broken = raw.is_in_transaction()
        else:
            broken = (
                not isinstance(exc, Exception)
                or is_connection_error(exc)
                or raw.is_closed()
                or raw.is_in_transaction()
            )
        if broken:
            await self._discard(held)
        else:
            self._idle.append(held)

    @contextlib.asynccontextmanager
    async def checkout(self, what: str) -> AsyncIterator[Any]:
        """`connection()`, with database and network errors raised as the library's typed
        errors (`map_error`), naming `what` was being done."""
        try:
            async with self.connection() as conn:
                yield conn
        except EventSourceError:
            raise
        except Exception as exc:
            if is_database_error(exc):
                raise map_error(exc, what) from exc
            raise

    async def _open(self) -> tuple[Any, Any]:
        connection = await self.engine.connect()
        try:
            raw = await connection.get_raw_connection()
        except BaseException:
            await connection.close()
            raise
        return connection, raw.driver_connection

    async def _discard(self, held: tuple[Any, Any]) -> None:
        connection = held[0]
        with contextlib.suppress(Exception):
            await connection.invalidate()
        with contextlib.suppress(Exception):
            await connection.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            with contextlib.suppress(Exception):
                await connection.close()


def engine_behind(source: Any) -> Any:
    """The engine of a SQLAlchemy `AsyncConnection` or `AsyncSession` (the package guide
    builds repositories from a connection); anything else unchanged. The repository runs its
    statements on its own pooled connections of that engine, not in that connection's
    transaction."""
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(source, AsyncConnection):
        return source.engine
    if isinstance(source, AsyncSession) and source.bind is not None:
        return source.bind.engine if isinstance(source.bind, AsyncConnection) else source.bind
    return source


def engine_of(engine_or_sessions: Any) -> AsyncEngine:
    from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

    if isinstance(engine_or_sessions, AsyncEngine):
        return engine_or_sessions
    if isinstance(engine_or_sessions, async_sessionmaker):
        bind = engine_or_sessions.kw.get("bind")
        if isinstance(bind, AsyncEngine):
            return bind
        raise ValueError("the async_sessionmaker has no AsyncEngine bound (bind=engine)")
    raise TypeError(
        "the PostgreSQL store takes a SQLAlchemy AsyncEngine or async_sessionmaker, not "
        f"{type(engine_or_sessions).__name__}; use from_url(url) for a URL"
    )


async def connection_of(bound: AsyncConnection | AsyncSession) -> AsyncConnection:
    from sqlalchemy.ext.asyncio import AsyncSession

    if isinstance(bound, AsyncSession):
        return await bound.connection()
    return bound


async def fetch_in(
    bound: AsyncConnection | AsyncSession, what: str, sql: str, *args: Any
) -> list[Sequence[Any]]:
    """Run one asyncpg-style statement (`$1` parameters) in the caller's SQLAlchemy
    transaction and return its rows; database errors typed (`map_error`), naming `what`."""
    try:
        connection = await connection_of(bound)
        result = await connection.exec_driver_sql(sql, args)
        return list(result.fetchall()) if result.returns_rows else []
    except Exception as exc:
        if is_database_error(exc):
            raise map_error(exc, what) from exc
        raise


async def retry_transient(
    call: Callable[[], Awaitable[_T]], *, budget: float, max_retries: int | None = None
) -> _T:
    """`call()`, called again after a `TransientStoreError` (a lost connection, a
    serialization failure, a deadlock) with exponential backoff and full jitter, until
    `budget` seconds have passed since the first call (and at most `max_retries` times when
    that is set); then the last error propagates. Only for calls that are safe to repeat."""
    attempt = 0
    deadline = time.monotonic() + budget
    while True:
        try:
            return await call()
        except TransientStoreError:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (max_retries is not None and attempt >= max_retries):
                raise
            attempt += 1
            await asyncio.sleep(
                min(backoff_delay(attempt, base=_RETRY_BASE, cap=_RETRY_CAP), remaining)
            )
