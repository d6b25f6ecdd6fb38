"""`NATSEventStore`: the store contract on a NATS JetStream stream.

Design (see docs/nats.md for the user's view):

- One JetStream stream per store, subjects `<prefix>.<aggregate type>.<aggregate id>`
  (`encode_token` keeps any aggregate type a valid subject token).
- **One message per append.** Servers before 2.12 have no atomic batch publish, so a
  multi-event append is one message holding all its events (`_nats_messages`): it is stored
  whole or not at all, by construction, and no reader can see part of it.
- **Positions** are `(stream sequence, index in the message)`. JetStream assigns sequences in
  the order it stores messages and a consumer delivers them in that order, so the feed is
  gap-free and a reader resuming after a position misses nothing stored later.
- **Optimistic concurrency**: an append reads the last message of its stream (a direct get,
  last by subject) whose `Es-Version` header is the stream's version, then publishes with
  `Nats-Expected-Last-Subject-Sequence` set to that message's sequence: a writer that got in
  between makes JetStream refuse the message, and the append reports `OptimisticLockError`
  (or, for `ExpectedVersion.ANY`, reads again and retries with the new versions).
- **Idempotency**: `Nats-Msg-Id` is the first event's id, so within the stream's
  de-duplication window a resent append is answered with the original message, whose
  contents `replayed_result` compares with the batch. Past the window, an append whose first
  event is in the stream's last message, or whose expected version conflicts and whose first
  event is anywhere in its stream, is recognised as a retry too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsource._internal import nats as jsapi
from eventsource._internal.clock import utc_now
from eventsource._internal.closing import closing_iterator
from eventsource._internal.optional import require
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import (
    AppendTooLargeError,
    InvalidEventError,
    OptimisticLockError,
    TransientStoreError,
)
from eventsource.stores._append import (
    attach_events,
    check_expected_version,
    expectation,
    replayed_result,
    validate_expected_version,
)
from eventsource.stores._nats_messages import (
    Batch,
    batch_headers,
    encode_body,
    header_size,
    holds,
    position,
    version_of,
)
from eventsource.stores._nats_reads import NATSReads
from eventsource.stores.interface import (
    AppendResult,
    AppendSignal,
    AppendSignals,
    EventStore,
)

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["NATSEventStore"]

_MAX_ANY_ATTEMPTS = 100
"""Rounds an `ExpectedVersion.ANY` append retries while other writers keep winning."""


class NATSEventStore(NATSReads, EventStore):
    """Events in the JetStream stream `stream` on the server at `url`.

    `subject_prefix` (default: the stream name) starts every subject. The stream is created
    on first use when missing (`replicas`, `storage` "file" or "memory", `duplicate_window`
    in seconds: how long JetStream de-duplicates a resent append by its first event id). The
    connection reconnects by itself; while the server is away, calls fail with
    `TransientStoreError` (retrying them is safe).
    """

    backend = "nats"
    filters_partitions = True

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        stream: str = "eventsource",
        subject_prefix: str | None = None,
        registry: EventRegistry | None = None,
        duplicate_window: float = 120.0,
        replicas: int = 1,
        storage: str = "file",
        request_timeout: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        require("nats", extra="nats", feature="NATSEventStore")
        self.url = url
        self.stream = jsapi.check_name(stream, "stream name")
        self.prefix = jsapi.check_name(subject_prefix or stream, "subject prefix")
        if storage not in ("file", "memory"):
            raise InvalidEventError(f"storage must be 'file' or 'memory', got {storage!r}")
        self._stream_config: dict[str, Any] = {
            "name": self.stream,
            "subjects": [f"{self.prefix}.>"],
            "retention": "limits",
            "storage": storage,
            "num_replicas": replicas,
            "duplicate_window": int(duplicate_window * 1_000_000_000),
            "allow_direct": True,
            "discard": "old",
        }
        self._codec = EventCodec(registry)
        self._timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._client_: Client | None = None
        self._lock = asyncio.Lock()
        self._signals = AppendSignals()

    def __repr__(self) -> str:
        return f"NATSEventStore({self.url!r}, stream={self.stream!r})"

    # -- connection --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and create the stream if it is missing (done on first use otherwise)."""
        await self._client()

    async def _client(self) -> Client:
        client = self._client_
        if client is not None:
            return client
        async with self._lock:
            if self._client_ is None:
                client = await jsapi.connect(
                    self.url, name="NATSEventStore", connect_timeout=self._connect_timeout
                )
                try:
                    await jsapi.ensure_stream(
                        client,
                        self._stream_config,
                        what=f"NATS store {self.stream!r}",
                        reply_wait=self._timeout,
                    )
                except BaseException:
                    await client.close()
                    raise
                self._client_ = client
            return self._client_

    async def close(self) -> None:
        async with self._lock:
            client, self._client_ = self._client_, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    def _subject(self, aggregate_type: str, aggregate_id: UUID) -> str:
        return f"{self.prefix}.{jsapi.encode_token(aggregate_type)}.{aggregate_id}"

    # -- append ------------------------------------------------------------------------------

    async def _append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        validate_expected_version(expected_version)
        if not isinstance(aggregate_id, UUID):
            raise InvalidEventError(f"aggregate_id must be a UUID, got {aggregate_id!r}")
        # Stamped (and so checked and encoded) once up front, so that bad input fails before
        # any I/O, with the versions an exact expectation gives (encoded again only when the
        # stream turns out to be elsewhere).
        first = expected_version + 1 if expected_version >= 0 else 1
        attached = attach_events(events, aggregate_id, aggregate_type, first)
        recorded_at = utc_now().timestamp()
        body = encode_body(attached, aggregate_id, aggregate_type, recorded_at) if events else b""
        client = await self._client()
        subject = self._subject(aggregate_type, aggregate_id)
        what = f"NATS store {self.stream!r}: append to {aggregate_id}"
        for _ in range(_MAX_ANY_ATTEMPTS):
            last = await self._last_of_stream(aggregate_id, aggregate_type)
            if last is None:  # a new stream, unless the id is in use under another type
                last = await self._last_of_stream(aggregate_id)
            if last is not None and last.subject != subject:
                raise InvalidEventError(
                    f"stream {aggregate_id} holds aggregate type "
                    f"{jsapi.decode_token(last.subject.split('.')[-2])!r}, not "
                    f"{aggregate_type!r}: an aggregate id belongs to one aggregate type"
                )
            if events and last is not None and holds(last, events[0].event_id):
                return replayed_result(
                    events, aggregate_id, aggregate_type, Batch.of(last).records()
                )
            current = version_of(last)
            try:
                check_expected_version(aggregate_id, expected_version, current)
            except OptimisticLockError:
                if events:
                    retried = await self._find_retry(events, aggregate_id, aggregate_type, subject)
                    if retried is not None:
                        return retried
                raise
            if not events:
                return AppendResult(aggregate_id, current, (), ())
            if current + 1 != first:
                first = current + 1
                attached = attach_events(attached, aggregate_id, aggregate_type, first)
                body = encode_body(attached, aggregate_id, aggregate_type, recorded_at)
            headers = batch_headers(attached, 0 if last is None else last.seq)
            limit = client.max_payload
            if len(body) + header_size(headers) > limit:
                raise AppendTooLargeError(
                    f"the append of {len(events)} events to {aggregate_id} takes "
                    f"{len(body) + header_size(headers)} bytes, more than the NATS server's "
                    f"max_payload of {limit} bytes: nothing was stored; append fewer or "
                    "smaller events at a time"
                )
            try:
                ack = await jsapi.js_request(
                    client, subject, body, what=what, reply_wait=self._timeout, headers=headers
                )
            except jsapi.JetStreamError as exc:
                if exc.err_code == jsapi.ERR_WRONG_LAST_SEQUENCE:
                    continue  # another writer got in: read the stream again
                if exc.err_code == jsapi.ERR_MESSAGE_TOO_LARGE:
                    raise AppendTooLargeError(
                        f"the append of {len(events)} events to {aggregate_id} is larger "
                        f"than the stream's max_msg_size: nothing was stored ({exc})"
                    ) from exc
                raise
            seq = int(ack["seq"])
            if ack.get("duplicate"):
                stored = await self._message(seq)
                if stored is None:
                    raise TransientStoreError(f"{what}: the original message {seq} is gone")
                return replayed_result(
                    events, aggregate_id, aggregate_type, Batch.of(stored).records()
                )
            self._signals.signal_append()
            return AppendResult(
                aggregate_id=aggregate_id,
                new_version=attached[-1].aggregate_version,
                events=tuple(attached),
                positions=tuple(position(seq, index) for index in range(len(attached))),
            )
        # Other writers won every round (only `ANY` and `STREAM_EXISTS` get here).
        current = await self.get_stream_version(aggregate_id)
        raise OptimisticLockError(aggregate_id, expectation(expected_version), current)

    async def _find_retry(
        self, events: list[DomainEvent], aggregate_id: UUID, aggregate_type: str, subject: str
    ) -> AppendResult | None:
        """The original result when `events` were appended to this stream before (a retry
        whose expected version no longer holds), else None."""
        client = await self._client()
        scan = jsapi.fetch_messages(
            client,
            self.stream,
            filter_subject=subject,
            start_seq=1,
            batch=256,
            what=f"NATS store {self.stream!r}: look for a retried append to {aggregate_id}",
            reply_wait=self._timeout,
            headers_only=True,
        )
        async with closing_iterator(scan):
            async for message in scan:
                if holds(message, events[0].event_id):
                    full = await self._message(message.seq)
                    if full is not None:
                        return replayed_result(
                            events, aggregate_id, aggregate_type, Batch.of(full).records()
                        )
        return None

    # -- wake-ups ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[AppendSignal]:
        """Signals for appends of every process: this store's own at once, others' through
        an ordered push consumer (headers only) on the stream's subjects."""
        async with self._signals.listen() as signal:
            client = await self._client()
            js = client.jetstream()
            api = require("nats.js.api", extra="nats", feature="NATSEventStore")

            async def wake(msg: Any) -> None:
                signal.notify()

            try:
                sub = await js.subscribe(
                    f"{self.prefix}.>",
                    stream=self.stream,
                    cb=wake,
                    ordered_consumer=True,
                    deliver_policy=api.DeliverPolicy.NEW,
                    headers_only=True,
                )
            except Exception as exc:
                raise jsapi.store_error(
                    f"NATS store {self.stream!r}: subscribe to appends", exc
                ) from exc
            try:
                yield signal
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
