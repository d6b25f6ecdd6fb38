"""`SyncEventStoreAdapter`: an `EventStore` as plain blocking methods, for synchronous callers
(Django or Flask views, scripts, management commands).

Every call runs on ONE private event loop, in a thread the adapter owns. One loop, not
`asyncio.run` per call, because a store's connections belong to the loop that opened them
(asyncpg connections and their pool, aiosqlite's result futures, asyncio locks): a second loop
would find them unusable. Threads may call the adapter at the same time; their calls become
concurrent tasks on that loop, where the store handles them as it handles concurrent
coroutines (optimistic concurrency included).

A blocking method called from a thread that runs an event loop would stall that loop (and
deadlock when it is the adapter's own loop), so it raises `SyncAdapterError` instead: async
code awaits the store itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar
from uuid import UUID

from eventsource.events.base import DomainEvent
from eventsource.exceptions import SyncAdapterError
from eventsource.stores.interface import (
    AppendResult,
    EventStore,
    EventStream,
    Position,
    ReadOptions,
    StoredEvent,
)

__all__ = ["SyncAdapterError", "SyncEventStoreAdapter"]

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound=EventStore)


def _name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _refuse_running_loop(fn: Callable[..., object]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise SyncAdapterError(
        f"{_name(fn)} was called through a blocking sync adapter from a thread that runs an "
        "event loop, which would stall that loop (or deadlock on the adapter's own loop); "
        "in async code await the async API (adapter.store / repository.repository), or "
        "run the sync code in a worker thread (asyncio.to_thread)"
    )


async def _invoke(
    context: contextvars.Context, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Calls `fn` on the loop itself, so whatever it does before its first await runs there,
    with the caller's context variables (the current tenant, the trace) set in its task."""
    for variable, value in context.items():
        variable.set(value)
    return await fn(*args, **kwargs)


async def _next_chunk(iterator: AsyncIterator[T], size: int) -> tuple[list[T], bool]:
    """Up to `size` items, and whether the iterator is exhausted: one loop round trip per
    page instead of one per event."""
    items: list[T] = []
    async for item in iterator:
        items.append(item)
        if len(items) >= size:
            return items, False
    return items, True


class _LoopThread:
    """An event loop running forever in a daemon thread, and the blocking bridge into it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._closed = False
        self._in_flight: set[concurrent.futures.Future[Any]] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def closed(self) -> bool:
        return self._closed

    def _submit(
        self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T] | None:
        """Schedule `fn` on the loop; None once closing began (the loop may be stopping, so a
        later call could never complete)."""
        with self._lock:
            if self._closed:
                return None
            call = _invoke(contextvars.copy_context(), fn, *args, **kwargs)
            future = asyncio.run_coroutine_threadsafe(call, self.loop)
            self._in_flight.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:  # runs on the loop thread while `stop` may copy the set
            self._in_flight.discard(future)

    def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` on the loop and block until it returns or raises."""
        _refuse_running_loop(fn)
        future = self._submit(fn, *args, **kwargs)
        if future is None:
            raise SyncAdapterError(
                f"{_name(fn)}: the sync adapter is closed; create a new adapter (and store)"
            )
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise SyncAdapterError(
                    f"{_name(fn)} was cancelled because the sync adapter closed while it ran"
                ) from None
            raise
        except BaseException:
            future.cancel()  # KeyboardInterrupt while waiting: stop the coroutine too
            raise

    def close_iterator(self, iterator: AsyncIterator[Any]) -> None:
        """Close an async iterator on the loop (returning a connection it may hold); waits only
        when this thread may block, since it can run from a garbage collection anywhere."""
        aclose = getattr(iterator, "aclose", None)
        if aclose is None:
            return
        future = self._submit(aclose)
        if future is None:
            return  # closing: loop.shutdown_asyncgens closes it
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            future.result()

    def stop(self, last: Callable[[], Awaitable[None]]) -> None:
        """Refuse new calls, let running ones finish, run `last` on the loop, then close
        leftover async generators and tasks and stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            running = list(self._in_flight)
        concurrent.futures.wait(running)
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(last), self.loop).result()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()

    async def _shutdown(self, last: Callable[[], Awaitable[None]]) -> None:
        await self.loop.shutdown_asyncgens()  # abandoned read iterators give connections back
        try:
            await last()
        finally:
            leftovers = asyncio.all_tasks() - {asyncio.current_task()}
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            await self.loop.shutdown_default_executor()


class SyncEventStoreAdapter(Generic[S]):
    """The `EventStore` interface as blocking methods, safe to share between threads.

    Give it a store that has not been used on another event loop yet; from then on use the
    store only through the adapter (`adapter.call(adapter.store.create_schema)` runs any
    other coroutine method, such as a backend's own, on the adapter's loop). `close()`, or
    leaving a `with` block, closes the store and stops the adapter's thread. `listen()` is not
    offered: append signals serve async subscriptions.
    """

    def __init__(self, store: S) -> None:
        self.store = store
        self._loop = _LoopThread(f"eventsource-sync-{type(store).__name__}")

    @property
    def closed(self) -> bool:
        return self._loop.closed

    def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run any coroutine function on the adapter's loop and return its result: for
        backend methods (`create_schema`, `connect`) or objects sharing the store's loop."""
        return self._loop.call(fn, *args, **kwargs)

    def append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: Sequence[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        """`EventStore.append_events`: raises `OptimisticLockError` on a version conflict."""
        return self._loop.call(
            self.store.append_events, aggregate_id, aggregate_type, events, expected_version
        )

    def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> Generator[StoredEvent, None, None]:
        """`EventStore.read_stream` as a lazy iterator fetching `options.batch_size` events
        per round trip to the loop (close it, or exhaust it, to end the read early)."""
        return self._iterate(
            self.read_stream,
            lambda: self.store.read_stream(aggregate_id, options),
            _batch_size(options),
        )

    def read_all(self, options: ReadOptions | None = None) -> Generator[StoredEvent, None, None]:
        """`EventStore.read_all` as a lazy iterator, paged like `read_stream`."""
        return self._iterate(
            self.read_all, lambda: self.store.read_all(options), _batch_size(options)
        )

    def get_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str | None = None,
        *,
        from_version: int = 1,
        to_version: int | None = None,
    ) -> EventStream:
        return self._loop.call(
            self.store.get_events,
            aggregate_id,
            aggregate_type,
            from_version=from_version,
            to_version=to_version,
        )

    def get_events_by_type(
        self,
        aggregate_type: str,
        tenant_id: UUID | None = None,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
    ) -> list[DomainEvent]:
        """`EventStore.get_events_by_type`: every event of the aggregates of one type, in
        global order (`read_all` with `ReadOptions(aggregate_type=...)` is the lazy form)."""
        return self._loop.call(
            self.store.get_events_by_type, aggregate_type, tenant_id, from_timestamp, to_timestamp
        )

    def count_events(self, options: ReadOptions | None = None) -> int:
        """`EventStore.count_events`: how many events `read_all(options)` would yield now."""
        return self._loop.call(self.store.count_events, options)

    def current_position(self) -> Position:
        return self._loop.call(self.store.current_position)

    def get_stream_version(self, aggregate_id: UUID) -> int:
        return self._loop.call(self.store.get_stream_version, aggregate_id)

    def event_exists(self, event_id: UUID) -> bool:
        return self._loop.call(self.store.event_exists, event_id)

    def get_event(self, event_id: UUID) -> StoredEvent:
        """`EventStore.get_event`: raises `EventNotFoundError` for an unknown id."""
        return self._loop.call(self.store.get_event, event_id)

    def _iterate(
        self,
        method: Callable[..., object],
        open_iterator: Callable[[], AsyncIterator[StoredEvent]],
        size: int,
    ) -> Generator[StoredEvent, None, None]:
        _refuse_running_loop(method)  # name the method the caller used, not a helper
        iterator = self._loop.call(_opened, open_iterator)
        done = False
        try:
            while not done:
                items, done = self._loop.call(_next_chunk, iterator, size)
                yield from items
        finally:
            if not done:
                self._loop.close_iterator(iterator)

    def close(self) -> None:
        """Close the store on its loop and stop the adapter's thread (idempotent); calls
        still running finish first, later calls raise `SyncAdapterError`."""
        _refuse_running_loop(self.close)
        self._loop.stop(self.store.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _opened(open_iterator: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
    """Creates the store's iterator on the loop, where any setup it does belongs."""
    return open_iterator()


def _batch_size(options: ReadOptions | None) -> int:
    return (options or ReadOptions()).batch_size
