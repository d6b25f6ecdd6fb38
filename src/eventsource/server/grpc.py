"""`GrpcStoreServer`: any `EventStore` served over gRPC (`eventsource/store/v1/store.proto`),
with grpc.health.v1 health checks and server reflection; `eventsource serve` runs it.

What it guarantees, and how:

- Appends keep the store's guarantees (atomic, expected version, idempotent by event id):
  the service hands the client's JSON to `append_events` unchanged, as `CopiedEvent`s.
- Reads are pages cut at `page_size` events and at the message size limit (the reply says
  `more`), so a reply never exceeds `max_message_size`; a single stored event too large to
  send is a clear RESOURCE_EXHAUSTED error naming it, not a broken stream.
- `Subscribe` streams the feed after a position: pages of stored events, then new ones as
  they commit (woken by the store's append signals, polling every `poll_interval` seconds so
  a lost signal only delays). Each page is read only when the previous one was handed to the
  transport, so a slow client holds back the reading (HTTP/2 flow control) instead of
  filling the server's memory.
- Security: see `_access` (bearer token -> tenant; a tenant's client sees only its events).
  TLS with `tls_certificate` and `tls_private_key` (PEM).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar
from uuid import UUID

from eventsource._internal.closing import AsyncClosing, closing_iterator
from eventsource._internal.retry import backoff_delay
from eventsource.exceptions import (
    EventNotFoundError,
    EventSourceError,
    MessageTooLargeError,
    OptimisticLockError,
    PermissionDeniedError,
)
from eventsource.server._access import TokenTable, check_owner, stream_owner, tenant_of
from eventsource.server._events import fill_recorded, incoming_event
from eventsource.stores._grpc_wire import (
    ERROR_KEY,
    MAX_MESSAGE_HEADER,
    SERVICE_NAME,
    error_status,
    grpc,
    parse_uuid,
    pb,
    pb_grpc,
    position_from,
    position_message,
    read_options_filters,
)
from eventsource.stores.grpc import DEFAULT_MAX_MESSAGE_SIZE
from eventsource.stores.interface import (
    AppendSignals,
    EventStore,
    ExpectedVersion,
    Position,
    ReadDirection,
    ReadOptions,
    StoredEvent,
)

__all__ = ["GrpcStoreServer"]

logger = logging.getLogger(__name__)

_R = TypeVar("_R")
_MESSAGE_OVERHEAD = 1024
"""Bytes kept free in a reply for its framing besides the events."""
_TENANT_APPEND_ATTEMPTS = 100


async def _abort(context: Any, exc: Exception) -> None:
    if isinstance(exc, EventSourceError):
        code, details, description = error_status(exc)
        context.set_trailing_metadata(((ERROR_KEY, description),))
        await context.abort(code, details)
    logger.exception("the event store service failed on a call", exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL, "internal error of the event store service (see its log)"
    )


def _unary(
    method: Callable[[Any, Any, Any], Awaitable[_R]],
) -> Callable[[Any, Any, Any], Awaitable[_R]]:
    @functools.wraps(method)
    async def call(self: Any, request: Any, context: Any) -> _R:
        try:
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await _abort(context, exc)
            raise  # not reached: abort raises

    return call


class _Service(pb_grpc.EventStoreServicer):  # type: ignore[misc]
    def __init__(self, server: GrpcStoreServer) -> None:
        self._server = server
        self._store = server.store

    def _scope(self, context: Any) -> UUID | None:
        return self._server.tokens.scope(context.invocation_metadata() or ())

    def _filters(self, message: pb.ReadFilter, tenant: UUID | None) -> dict[str, Any]:
        filters = read_options_filters(message)
        if tenant is not None:
            asked = filters.get("tenant_id")
            if asked is not None and asked != tenant:
                raise PermissionDeniedError(
                    f"this client acts for tenant {tenant} and may not read tenant {asked}"
                )
            filters["tenant_id"] = tenant
        return filters

    def _reply_limit(self, context: Any) -> int:
        """The largest reply this call may get: the server's limit, or the client's when it
        declared a smaller one (metadata `x-eventsource-max-message-size`)."""
        limit = self._server.max_message_size
        for key, value in context.invocation_metadata() or ():
            if key == MAX_MESSAGE_HEADER and isinstance(value, str) and value.isdigit():
                limit = max(4096, min(limit, int(value)))
        return limit

    async def _fill(
        self, reply: Any, events: AsyncIterator[StoredEvent], asked: int, limit: int
    ) -> bool:
        """Add up to `asked` events to `reply.events` (capped by the page size and the
        message size); whether the page was cut before `asked` with more events possibly
        left."""
        server = self._server
        cap = min(asked, server.page_size)
        budget = limit - _MESSAGE_OVERHEAD
        page = reply.events
        add = page.add
        size = count = 0
        async with closing_iterator(events) as reading:
            async for stored in reading:
                message = add()
                length = await self._recorded(stored, message, limit)
                if size + length > budget:
                    del page[-1]
                    return True
                size += length
                count += 1
                if count >= cap:
                    return cap < asked
        return False

    async def _recorded(self, stored: StoredEvent, message: pb.RecordedEvent, limit: int) -> int:
        """Fill `message` with `stored`; its size, or `MessageTooLargeError` when no reply
        can hold it."""
        await fill_recorded(self._store, stored, message)
        length = message.ByteSize() + 8
        if length > limit - _MESSAGE_OVERHEAD:
            raise MessageTooLargeError(
                f"stored event {stored.event_type} {message.event.event_id} at "
                f"{stored.position} is {length} bytes, over the max_message_size of {limit} of "
                "this call (the server's or the client's, the smaller): raise both to read it"
            )
        return length

    @_unary
    async def Append(self, request: pb.AppendRequest, context: Any) -> pb.AppendResponse:
        tenant = self._scope(context)
        aggregate_id = parse_uuid(request.aggregate_id, "aggregate_id")
        aggregate_type = request.aggregate_type
        events = [
            incoming_event(data, aggregate_id, aggregate_type, tenant) for data in request.events
        ]
        expected = int(request.expected_version)
        if tenant is None:
            result = await self._store.append_events(aggregate_id, aggregate_type, events, expected)
        else:
            result = await self._tenant_append(
                aggregate_id, aggregate_type, events, expected, tenant
            )
        return pb.AppendResponse(
            new_version=result.new_version,
            positions=[position_message(p) for p in result.positions],
            already_stored=result.already_stored,
            tenant_id=None if tenant is None else str(tenant),
        )

    async def _tenant_append(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[Any],
        expected: int,
        tenant: UUID,
    ) -> Any:
        """Append into a stream of `tenant` only. The owner is checked at the version the
        append then expects exactly (ANY and STREAM_EXISTS become that version, retried when
        another writer came first), so no other tenant's append can slip in between."""
        for _ in range(_TENANT_APPEND_ATTEMPTS):
            version, owner = await stream_owner(self._store, aggregate_id)
            if version:
                check_owner(aggregate_id, owner, tenant)
            if expected not in (ExpectedVersion.ANY, ExpectedVersion.STREAM_EXISTS):
                return await self._store.append_events(
                    aggregate_id, aggregate_type, events, expected
                )
            if expected == ExpectedVersion.STREAM_EXISTS and version == 0:
                raise OptimisticLockError(aggregate_id, ExpectedVersion.STREAM_EXISTS, 0)
            try:
                return await self._store.append_events(
                    aggregate_id, aggregate_type, events, version
                )
            except OptimisticLockError:
                continue
        raise OptimisticLockError(aggregate_id, ExpectedVersion(expected), version)

    async def _check_stream(self, aggregate_id: UUID, tenant: UUID | None) -> None:
        if tenant is not None:
            version, owner = await stream_owner(self._store, aggregate_id)
            if version:
                check_owner(aggregate_id, owner, tenant)

    @_unary
    async def ReadStream(self, request: pb.ReadStreamRequest, context: Any) -> pb.ReadResponse:
        tenant = self._scope(context)
        aggregate_id = parse_uuid(request.aggregate_id, "aggregate_id")
        await self._check_stream(aggregate_id, tenant)
        limit = max(1, min(int(request.limit or self._server.page_size), self._server.page_size))
        options = ReadOptions(
            direction=ReadDirection.BACKWARD if request.backward else ReadDirection.FORWARD,
            from_version=int(request.from_version),
            to_version=int(request.to_version) if request.HasField("to_version") else None,
            limit=limit,
            batch_size=limit,
            **self._filters(request.filter, tenant),
        )
        reply = pb.ReadResponse()
        reply.more = await self._fill(
            reply,
            self._store.read_stream(aggregate_id, options),
            int(request.limit or limit),
            self._reply_limit(context),
        )
        return reply

    def _feed_options(
        self, request: pb.ReadAllRequest, tenant: UUID | None, limit: int | None
    ) -> ReadOptions:
        return ReadOptions(
            direction=ReadDirection.BACKWARD if request.backward else ReadDirection.FORWARD,
            after=position_from(request.after) if request.HasField("after") else None,
            limit=limit,
            batch_size=max(1, min(limit or self._server.page_size, self._server.page_size)),
            **self._filters(request.filter, tenant),
        )

    @_unary
    async def ReadAll(self, request: pb.ReadAllRequest, context: Any) -> pb.ReadResponse:
        tenant = self._scope(context)
        asked = int(request.limit) if request.HasField("limit") else self._server.page_size
        limit = min(asked, self._server.page_size)
        options = self._feed_options(request, tenant, limit)
        reply = pb.ReadResponse()
        reply.more = await self._fill(
            reply, self._store.read_all(options), asked, self._reply_limit(context)
        )
        return reply

    @_unary
    async def CountEvents(self, request: pb.ReadAllRequest, context: Any) -> pb.CountResponse:
        tenant = self._scope(context)
        limit = int(request.limit) if request.HasField("limit") else None
        count = await self._store.count_events(self._feed_options(request, tenant, limit))
        return pb.CountResponse(count=count)

    @_unary
    async def GetStreamVersion(
        self, request: pb.StreamRequest, context: Any
    ) -> pb.StreamVersionResponse:
        tenant = self._scope(context)
        aggregate_id = parse_uuid(request.aggregate_id, "aggregate_id")
        if tenant is None:
            return pb.StreamVersionResponse(
                version=await self._store.get_stream_version(aggregate_id)
            )
        version, owner = await stream_owner(self._store, aggregate_id)
        if version:
            check_owner(aggregate_id, owner, tenant)
        return pb.StreamVersionResponse(version=version)

    @_unary
    async def CurrentPosition(
        self, request: pb.CurrentPositionRequest, context: Any
    ) -> pb.PositionResponse:
        self._scope(context)
        position = await self._store.current_position()
        return pb.PositionResponse(position=position_message(position))

    async def _visible(self, event_id: UUID, tenant: UUID | None) -> StoredEvent | None:
        try:
            stored = await self._store.get_event(event_id)
        except EventNotFoundError:
            return None
        if tenant is not None and tenant_of(stored) != tenant:
            return None  # another tenant's event: as if it did not exist
        return stored

    @_unary
    async def GetEvent(self, request: pb.EventRequest, context: Any) -> pb.EventResponse:
        tenant = self._scope(context)
        event_id = parse_uuid(request.event_id, "event_id")
        stored = await self._visible(event_id, tenant)
        if stored is None:
            raise EventNotFoundError(event_id)
        reply = pb.EventResponse()
        await self._recorded(stored, reply.event, self._reply_limit(context))
        return reply

    @_unary
    async def EventExists(self, request: pb.EventRequest, context: Any) -> pb.EventExistsResponse:
        tenant = self._scope(context)
        event_id = parse_uuid(request.event_id, "event_id")
        if tenant is None:
            return pb.EventExistsResponse(exists=await self._store.event_exists(event_id))
        return pb.EventExistsResponse(exists=await self._visible(event_id, tenant) is not None)

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Any
    ) -> AsyncIterator[pb.SubscribeResponse]:
        try:
            tenant = self._scope(context)
            filters = self._filters(request.filter, tenant)
        except Exception as exc:
            await _abort(context, exc)
        server = self._server
        limit = self._reply_limit(context)
        batch = max(1, min(int(request.batch_size or server.page_size), server.page_size))
        after: Position | None = position_from(request.after) if request.HasField("after") else None
        caught_up = False
        try:
            async with server.wakeups.listen() as signal:
                while True:
                    options = ReadOptions(after=after, limit=batch, batch_size=batch, **filters)
                    reply = pb.SubscribeResponse()
                    more = await self._fill(reply, self._store.read_all(options), batch, limit)
                    count = len(reply.events)
                    full = more or count == batch
                    if count:
                        after = position_from(reply.events[-1].position)
                    if count or not caught_up:
                        reply.caught_up = not caught_up and not full
                        caught_up = caught_up or reply.caught_up
                        # Sent before the next page is read: flow control paces the reading.
                        yield reply
                    if full:
                        continue
                    try:
                        async with asyncio.timeout(server.poll_interval):
                            await signal.wait()
                    except TimeoutError:
                        pass
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            await _abort(context, exc)

    async def WatchAppends(
        self, request: pb.WatchRequest, context: Any
    ) -> AsyncIterator[pb.AppendNotice]:
        try:
            self._scope(context)
        except Exception as exc:
            await _abort(context, exc)
        async with self._server.wakeups.listen() as signal:
            while True:
                await signal.wait()
                yield pb.AppendNotice()


class GrpcStoreServer(AsyncClosing):
    """Serves `store` over gRPC; `await start("127.0.0.1:50051")`, `await close()`.

    `tokens` maps bearer tokens to the tenant each acts for (None: every tenant); without
    `tokens` every call is accepted and acts for every tenant (use only behind another
    guard). `tls_certificate`/`tls_private_key` (PEM bytes) switch TLS on. Requests and
    replies may have `max_message_size` bytes; reads return at most `page_size` events per
    reply. The store is not closed by `close()`: its owner closes it.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        tokens: Mapping[str, UUID | None] | None = None,
        tls_certificate: bytes | None = None,
        tls_private_key: bytes | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        page_size: int = 1000,
        poll_interval: float = 1.0,
    ) -> None:
        if (tls_certificate is None) != (tls_private_key is None):
            raise ValueError("TLS needs both tls_certificate and tls_private_key")
        if page_size < 1 or max_message_size < 4096:
            raise ValueError("page_size must be >= 1 and max_message_size >= 4096")
        self.store = store
        self.tokens = TokenTable(tokens)
        self.max_message_size = max_message_size
        self.page_size = page_size
        self.poll_interval = poll_interval
        self._tls = None if tls_certificate is None else (tls_private_key, tls_certificate)
        self.wakeups = AppendSignals()
        """Append signals for the service's streams, relayed from ONE `store.listen()` (a
        listen per stream would hold a database connection per stream on PostgreSQL)."""
        self._relay: asyncio.Task[None] | None = None
        self._server: Any = None
        self._health: Any = None
        self.port: int | None = None
        """The port listened on, once started (useful with port 0: any free port)."""

    async def start(self, listen: str = "127.0.0.1:50051") -> int:
        """Listen on `listen` ("host:port"; port 0 picks a free one) and serve; the port."""
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", self.max_message_size),
                ("grpc.max_receive_message_length", self.max_message_size),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ]
        )
        pb_grpc.add_EventStoreServicer_to_server(_Service(self), server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if self._tls is None:
            port = server.add_insecure_port(listen)
        else:
            credentials = grpc.ssl_server_credentials([self._tls])
            port = server.add_secure_port(listen, credentials)
        if not port:
            raise OSError(f"the event store service cannot listen on {listen}")
        await server.start()
        self._relay = asyncio.create_task(self._relay_signals(), name="eventsource serve: signals")
        serving = health_pb2.HealthCheckResponse.SERVING
        await self._health.set("", serving)
        await self._health.set(SERVICE_NAME, serving)
        self._server, self.port = server, int(port)
        return self.port

    async def _relay_signals(self) -> None:
        """Hand the store's append signals on to every stream; when listening fails (the
        database went away), retry with backoff, waking every stream meanwhile (they poll
        too, so a lost signal only delays)."""
        attempt = 0
        while True:
            try:
                async with self.store.listen() as signal:
                    attempt = 0
                    self.wakeups.signal_append()  # appends may have been missed meanwhile
                    while True:
                        await signal.wait()
                        self.wakeups.signal_append()
            except Exception:
                attempt += 1
                logger.warning("cannot listen for appends; retrying", exc_info=True)
                self.wakeups.signal_append()
                await asyncio.sleep(backoff_delay(attempt, base=0.1, cap=5.0))

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def close(self, grace: float = 1.0) -> None:
        """Stop serving: new calls are refused, running ones get `grace` seconds."""
        server, self._server = self._server, None
        if server is None:
            return
        await self._health.enter_graceful_shutdown()
        await server.stop(grace)
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
