"""`GrpcEventStore`: an `EventStore` served by `eventsource serve` (or any server of
`eventsource/store/v1/store.proto`), so repositories, snapshots, subscriptions and projections
run unchanged against a store shared by many services.

Design notes:

- Events are encoded here (`EventCodec.encode`, which refuses unstorable values before
  anything is sent) and decoded here through this client's registry: the server stores and
  returns JSON and needs none of the application's classes.
- Reads are pages of unary calls (`ReadAll`/`ReadStream` resume after the last event of the
  previous page), so an abandoned read holds nothing open and every call has a deadline.
- Every call has a deadline (`deadline` seconds). A call that finds the server unreachable
  (UNAVAILABLE without a server error) is retried with exponential backoff and jitter for up
  to `reconnect_timeout` seconds while the channel reconnects; appends too, since appends are
  idempotent by event id. After that `StoreConnectionError` is raised.
- A failed call raises the error the server's store raised (`OptimisticLockError`,
  `EventIdConflictError`, ...), rebuilt from the status's `eventsource-error` metadata;
  UNAUTHENTICATED is `AuthenticationError`, PERMISSION_DENIED `PermissionDeniedError`, a
  message over the size limit `MessageTooLargeError`.
- `listen()` watches the server's append notices (a server-streaming call) and also signals
  this client's own appends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from eventsource._internal.retry import backoff_delay
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import (
    EventNotFoundError,
    EventSourceError,
    MessageTooLargeError,
    StoreConnectionError,
)
from eventsource.stores._append import attach_events, validate_expected_version
from eventsource.stores._grpc_wire import (
    ERROR_KEY,
    MAX_MESSAGE_HEADER,
    error_from_status,
    filter_message,
    grpc,
    pb,
    pb_grpc,
    position_from,
    position_message,
)
from eventsource.stores.interface import (
    AppendResult,
    AppendSignal,
    EventStore,
    Position,
    ReadOptions,
    StoredEvent,
)

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "GrpcEventStore"]

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""Bytes a message may have in either direction, unless configured (client and server)."""

_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0


class GrpcEventStore(EventStore):
    """An event store reached over gRPC at `target` (`"host:port"`).

    `token` is sent as `authorization: Bearer <token>`; the server maps it to a tenant.
    `tenant_id` scopes this client to one tenant (the server checks it against the token):
    events appended without a tenant get it, and reads return only its events. `tls=True`
    (or `root_certificates`, PEM bytes of the CA to trust) uses TLS; `tls_server_name`
    overrides the name checked in the server's certificate. `deadline` bounds every call,
    `reconnect_timeout` how long calls wait for an unreachable server.
    """

    backend = "grpc"
    filters_partitions = True

    def __init__(
        self,
        target: str,
        *,
        registry: EventRegistry | None = None,
        token: str | None = None,
        tenant_id: UUID | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        tls_server_name: str | None = None,
        deadline: float = 30.0,
        reconnect_timeout: float = 30.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.target = target
        self.tenant_id = tenant_id
        self.deadline = deadline
        self.reconnect_timeout = reconnect_timeout
        self.max_message_size = max_message_size
        self._codec = EventCodec(registry)
        metadata: list[tuple[str, str]] = [(MAX_MESSAGE_HEADER, str(max_message_size))]
        if token is not None:
            metadata.append(("authorization", f"Bearer {token}"))
        if tenant_id is not None:
            metadata.append(("x-eventsource-tenant", str(tenant_id)))
        self._metadata = tuple(metadata)
        self._tls = tls or root_certificates is not None
        self._root_certificates = root_certificates
        self._tls_server_name = tls_server_name
        self._channel: Any = None
        self._stub: Any = None
        self._signals: set[AppendSignal] = set()

    # -- the channel -------------------------------------------------------------------------

    def _client(self) -> Any:
        """The stub, on a channel opened on first use (in the running event loop)."""
        if self._stub is None:
            options: list[tuple[str, Any]] = [
                ("grpc.max_send_message_length", self.max_message_size),
                ("grpc.max_receive_message_length", self.max_message_size),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
            if self._tls:
                if self._tls_server_name is not None:
                    options.append(("grpc.ssl_target_name_override", self._tls_server_name))
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=self._root_certificates
                )
                self._channel = grpc.aio.secure_channel(self.target, credentials, options=options)
            else:
                self._channel = grpc.aio.insecure_channel(self.target, options=options)
            self._stub = pb_grpc.EventStoreStub(self._channel)
        return self._stub

    async def connect(self) -> None:
        """Open the channel and wait until the server answers (`StoreConnectionError` after
        `reconnect_timeout` seconds). Optional: every call connects when needed."""
        await self.current_position()

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def _call(self, method: str, request: Any) -> Any:
        """The unary call `method` with a deadline, retried with backoff while the server is
        unreachable (for up to `reconnect_timeout` seconds); errors mapped to ours."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        while True:
            try:
                call = getattr(self._client(), method)
                return await call(request, timeout=self.deadline, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                if (
                    exc.code() is grpc.StatusCode.UNAVAILABLE
                    and not _described(exc)
                    and loop.time() - started < self.reconnect_timeout
                ):
                    attempt += 1
                    delay = backoff_delay(attempt, base=_BACKOFF_BASE, cap=_BACKOFF_CAP)
                    await asyncio.sleep(delay)
                    continue
                raise self._error(exc) from None

    def _error(self, exc: Any) -> EventSourceError:
        error = error_from_status(exc.code(), exc.details(), exc.trailing_metadata())
        if isinstance(error, StoreConnectionError) and not _described(exc):
            return StoreConnectionError(
                f"the event store service at {self.target} is unreachable "
                f"(for {self.reconnect_timeout:g}s of retries): {exc.details()}"
            )
        return error

    # -- appends -------------------------------------------------------------------------------

    async def _append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        validate_expected_version(expected_version)
        tenant = self.tenant_id
        if tenant is not None:
            events = [
                e if e.tenant_id is not None else e.model_copy(update={"tenant_id": tenant})
                for e in events
            ]
        # Stamped with the stream (versions from 1: the server's store sets the real ones),
        # which also checks the batch (foreign stream, repeated ids) before anything is sent.
        stamped = attach_events(events, aggregate_id, aggregate_type, 1)
        request = pb.AppendRequest(
            aggregate_id=str(aggregate_id),
            aggregate_type=aggregate_type,
            expected_version=expected_version,
            events=[
                pb.EventData(
                    event_id=str(event.event_id),
                    event_type=event.event_type,
                    event_version=event.event_version,
                    aggregate_id=str(aggregate_id),
                    aggregate_type=aggregate_type,
                    aggregate_version=event.aggregate_version,
                    payload=self._codec.encode(event),
                )
                for event in stamped
            ],
        )
        size = request.ByteSize()
        if size > self.max_message_size:
            raise MessageTooLargeError(
                f"an append of {len(events)} events to stream {aggregate_id} is {size} bytes, "
                f"over this client's max_message_size of {self.max_message_size}: nothing was "
                "sent; append fewer or smaller events (or raise the limit here and on the server)"
            )
        response = await self._call("Append", request)
        if response.HasField("tenant_id") and tenant is None:
            # The server stamped the caller's tenant on events that named none: so do we.
            tenant = UUID(response.tenant_id)
            stamped = [
                e if e.tenant_id is not None else e.model_copy(update={"tenant_id": tenant})
                for e in stamped
            ]
        first = response.new_version - len(stamped) + 1
        result = AppendResult(
            aggregate_id=aggregate_id,
            new_version=response.new_version,
            events=tuple(attach_events(stamped, aggregate_id, aggregate_type, first)),
            positions=tuple(position_from(p) for p in response.positions),
            already_stored=response.already_stored,
        )
        if result.positions:
            for signal in list(self._signals):
                signal.notify()
        return result

    # -- reads ---------------------------------------------------------------------------------

    def _stored(self, recorded: Any) -> StoredEvent:
        data = recorded.event
        return StoredEvent.from_row(
            self._codec,
            (recorded.position.commit, recorded.position.sequence),
            recorded.recorded_at_us / 1_000_000,  # epoch seconds: a datetime when read
            UUID(data.event_id),
            data.event_type,
            data.event_version,
            UUID(data.aggregate_id),
            data.aggregate_type,
            data.aggregate_version,
            data.payload,
        )

    async def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        remaining = options.limit
        low, high = options.from_version, options.to_version
        filters = filter_message(options)
        while remaining is None or remaining > 0:
            page = options.batch_size if remaining is None else min(options.batch_size, remaining)
            request = pb.ReadStreamRequest(
                aggregate_id=str(aggregate_id),
                backward=not options.forward,
                from_version=low,
                to_version=high,
                limit=page,
                filter=filters,
            )
            response = await self._call("ReadStream", request)
            for recorded in response.events:
                yield self._stored(recorded)
            count = len(response.events)
            if count == 0 or (count < page and not response.more):
                return
            if remaining is not None:
                remaining -= count
            last = response.events[-1].event.aggregate_version
            if options.forward:
                low = last + 1
            else:
                high = last - 1

    async def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        remaining = options.limit
        after = options.after
        filters = filter_message(options)
        while remaining is None or remaining > 0:
            page = options.batch_size if remaining is None else min(options.batch_size, remaining)
            request = pb.ReadAllRequest(backward=not options.forward, limit=page, filter=filters)
            if after is not None:
                request.after.CopyFrom(position_message(after))
            response = await self._call("ReadAll", request)
            for recorded in response.events:
                yield self._stored(recorded)
            count = len(response.events)
            if count == 0 or (count < page and not response.more):
                return
            if remaining is not None:
                remaining -= count
            after = position_from(response.events[-1].position)

    async def count_events(self, options: ReadOptions | None = None) -> int:
        options = options or ReadOptions()
        request = pb.ReadAllRequest(backward=not options.forward, filter=filter_message(options))
        if options.limit is not None:
            request.limit = options.limit
        if options.after is not None:
            request.after.CopyFrom(position_message(options.after))
        response = await self._call("CountEvents", request)
        return int(response.count)

    async def current_position(self) -> Position:
        response = await self._call("CurrentPosition", pb.CurrentPositionRequest())
        return position_from(response.position)

    async def get_stream_version(self, aggregate_id: UUID) -> int:
        request = pb.StreamRequest(aggregate_id=str(aggregate_id))
        response = await self._call("GetStreamVersion", request)
        return int(response.version)

    async def event_exists(self, event_id: UUID) -> bool:
        request = pb.EventRequest(event_id=str(event_id))
        response = await self._call("EventExists", request)
        return bool(response.exists)

    async def get_event(self, event_id: UUID) -> StoredEvent:
        request = pb.EventRequest(event_id=str(event_id))
        response = await self._call("GetEvent", request)
        if not response.HasField("event"):
            raise EventNotFoundError(event_id)
        return self._stored(response.event)

    # -- live ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[AppendSignal]:
        signal = AppendSignal()
        self._signals.add(signal)
        watcher = asyncio.create_task(self._watch(signal))
        try:
            yield signal
        finally:
            self._signals.discard(signal)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self, signal: AppendSignal) -> None:
        """Relay the server's append notices to `signal`; reconnect with backoff when the
        stream breaks (signalling then, since notices may have been missed meanwhile)."""
        attempt = 0
        while True:
            call = None
            try:
                call = self._client().WatchAppends(pb.WatchRequest(), metadata=self._metadata)
                async for _ in call:
                    attempt = 0
                    signal.notify()
            except grpc.aio.AioRpcError:
                pass
            finally:
                if call is not None:
                    call.cancel()
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, base=_BACKOFF_BASE, cap=_BACKOFF_CAP))
            signal.notify()

    async def subscribe(
        self, options: ReadOptions | None = None, *, batch_size: int = 500
    ) -> AsyncIterator[StoredEvent]:
        """The feed after `options.after` (filtered by `options`): the stored events, then
        new ones as they are appended, without end, through the server's `Subscribe` stream.
        A broken stream is resumed after the last event yielded (backoff between attempts),
        so nothing is skipped or repeated. Stop by breaking out of the loop."""
        options = options or ReadOptions()
        after = options.after
        filters = filter_message(options)
        attempt = 0
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        while True:
            request = pb.SubscribeRequest(filter=filters, batch_size=batch_size)
            if after is not None:
                request.after.CopyFrom(position_message(after))
            call = self._client().Subscribe(request, metadata=self._metadata)
            try:
                async for message in call:
                    attempt, failing_since = 0, None
                    for recorded in message.events:
                        stored = self._stored(recorded)
                        yield stored
                        after = stored.position
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE or _described(exc):
                    raise self._error(exc) from None
                failing_since = failing_since if failing_since is not None else loop.time()
                if loop.time() - failing_since > self.reconnect_timeout:
                    raise self._error(exc) from None
            finally:
                call.cancel()
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, base=_BACKOFF_BASE, cap=_BACKOFF_CAP))


def _described(exc: Any) -> bool:
    """Whether the server sent its own error (else the failure is the connection's)."""
    return any(key == ERROR_KEY for key, _ in exc.trailing_metadata() or ())
