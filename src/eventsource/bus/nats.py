"""`NATSEventBus`: the bus on NATS JetStream (nats-server 2.9 or newer).

Two streams per bus namespace (`subject_prefix`):

- `{stream}` holds the events, one subject per aggregate:
  `{prefix}.{aggregate_type}.{aggregate_id}` (each part made one subject token by
  `subject_token`). Every publish carries `Nats-Msg-Id` = the event id, so JetStream drops a
  re-send of the same event inside its `duplicate_window`. A batch is pipelined on one
  connection and confirmed message by message; after a lost connection it is sent again
  from the first unconfirmed message (the server stored a prefix of what one connection
  sent, the rest are duplicates it drops), so order is kept.
- `{stream}-groups`, a work-queue stream, holds what belongs to one consumer group `{g}`:
  its retries at `{prefix}._group.{g}.retry` and its dead letters at
  `{prefix}._group.{g}.dlq`. `{g}` is `config.broker_group` (per tenant for a tenant
  consumer).

A consumer group is a durable pull consumer on each stream, named after the group; the
group's consumers fetch from it and compete for its messages. A group seen for the first
time starts with the events published from then on; an existing one resumes where it
stopped. A message stays pending until its consumer acknowledges it; a consumer that dies
or freezes leaves it to be redelivered after `ack_wait` (a running consumer signals
progress on the messages it holds every `ack_wait / 3` s, so a slow handler keeps its
message).

A failed message is copied, with the handlers that succeeded and the next attempt in its
headers, to the group's retry subject (confirmed; `Nats-Msg-Id` from the original's stream
sequence, so a copy re-sent after a crash is dropped), then the original is acknowledged.
The first delivery of a retry copy is answered with a NAK carrying the retry delay, so the
server itself holds it back until it is due; acknowledged, the copy leaves the work queue.
After `max_attempts` the message goes to the group's dead-letter subject, where
`dead_letters()` reads it without consuming it.

Deliveries are counted by the bus, not by JetStream's `max_deliver` (left unlimited): a
redelivery after a consumer died is not a failed attempt, and a server that stops
delivering at `max_deliver` would leave the message pending with no dead letter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from eventsource._internal.optional import require
from eventsource._internal.retry import backoff_delay
from eventsource.bus import _wire
from eventsource.bus._nats_config import (
    NATSEventBusConfig,
    app_headers,
    attempt_of,
    clean_headers,
    refuse_oversized,
    seconds_of,
    subject_token,
)
from eventsource.bus.interface import BusDeadLetter, EventBus, Outcome, Verdict
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.exceptions import BusConnectionError, BusPublishError, EventBusError

if TYPE_CHECKING:
    import nats
    import nats.aio.client
    import nats.errors
    import nats.js.api
    import nats.js.errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext
else:
    nats = require("nats", extra="nats", feature="NATSEventBus")
    for _module in ("nats.errors", "nats.js.api", "nats.js.errors", "nats.aio.client"):
        require(_module, extra="nats", feature="NATSEventBus")

__all__ = ["NATSEventBus", "NATSEventBusConfig", "subject_token"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

MSG_ID = "Nats-Msg-Id"
RETRY_DELAY = "x-retry-delay"
"""Set on a retry copy: seconds its first delivery is held back (by a NAK with that delay)."""
ORIGIN = "x-origin-seq"
"""Set on a retry copy or dead letter: the stream sequence of the original message."""

_LOST: tuple[type[BaseException], ...] = (
    asyncio.TimeoutError,
    OSError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
)
"""What an operation raises while the server is unreachable, restarting or has no stream
yet (JetStream answers nobody for a while after a restart): retried until a deadline."""

_FAILED: tuple[type[BaseException], ...] = (*_LOST, nats.errors.Error)
"""What an operation on the server raises: a lost connection, or a refusal."""
_REJOIN_FAILED: tuple[type[BaseException], ...] = (*_FAILED, EventBusError)
_CHECK_EVERY = 10
"""Empty fetches in a row after which a consumer checks that its durable consumer exists."""


class NATSEventBus(EventBus):
    """One consumer of `config.broker_group` on NATS JetStream; see the module docs."""

    config: NATSEventBusConfig

    def __init__(
        self, config: NATSEventBusConfig, *, registry: EventRegistry | None = None
    ) -> None:
        super().__init__(config, registry)
        prefix, group = config.subject_prefix, subject_token(config.broker_group)
        self.stream = config.stream or subject_token(prefix)
        self.groups_stream = f"{self.stream}-groups"
        self.events_subjects = f"{prefix}.*.*"
        self.retry_subject = f"{prefix}._group.{group}.retry"
        self.dead_letter_subject = f"{prefix}._group.{group}.dlq"
        self.durable = group
        self.client_name = config.client_name or (
            f"eventsource {config.broker_group} {config.consumer_name}"
        )
        parts = urlsplit(config.url)
        self._where = f"NATS at {parts.hostname}:{parts.port or 4222}"
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting = asyncio.Lock()
        self._streams_ready = False
        self._subs: dict[bool, JetStreamContext.PullSubscription] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._fetching: set[asyncio.Task[Any]] = set()
        self._held: dict[int, Msg] = {}
        self._handling = asyncio.Lock()
        self._stopping = False

    # -- connection ------------------------------------------------------------------------

    async def _jetstream(self) -> JetStreamContext:
        """The JetStream context, connected (and the streams made) first if need be."""
        if self._js is None:
            async with self._connecting:
                if self._js is None:
                    self._nc = await self._connect()
                    self._js = self._nc.jetstream(timeout=self.config.request_timeout)
        if not self._streams_ready:
            await self._make_streams(self._js)
        return self._js

    async def _connect(self) -> Client:
        client: Client = nats.aio.client.Client()
        try:
            await asyncio.wait_for(
                client.connect(
                    servers=[self.config.url],
                    name=self.client_name,
                    connect_timeout=self.config.connect_timeout,  # type: ignore[arg-type]  # seconds, floats work
                    reconnect_time_wait=self.config.reconnect_interval,  # type: ignore[arg-type]  # seconds, floats work
                    max_reconnect_attempts=-1,
                    ping_interval=self.config.ping_interval,  # type: ignore[arg-type]  # seconds, floats work
                    error_cb=self._connection_error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                ),
                self.config.reconnect_timeout,
            )
        except _FAILED as exc:
            with contextlib.suppress(Exception):
                await client.close()
            if isinstance(exc, nats.errors.AuthorizationError):
                raise BusConnectionError(
                    f"{self._where} refused the credentials ({exc}); check the URL"
                ) from exc
            raise BusConnectionError(
                f"cannot connect to {self._where} within {self.config.reconnect_timeout:g} s "
                f"({exc!r}); check the URL and that nats-server runs with JetStream (-js)"
            ) from exc
        return client

    async def _connection_error(self, error: Exception) -> None:
        logger.debug("%s (%s): %r", self._where, self.client_name, error)

    async def _disconnected(self) -> None:
        if self._nc is None:  # closing
            return
        logger.warning("%s: connection %r lost; reconnecting", self._where, self.client_name)

    async def _reconnected(self) -> None:
        logger.info("%s: connection %r re-made", self._where, self.client_name)

    async def _make_streams(self, js: JetStreamContext) -> None:
        """Create both streams, or accept existing ones that take our subjects."""
        api, config = nats.js.api, self.config
        storage = api.StorageType.MEMORY if config.memory_storage else api.StorageType.FILE
        common: dict[str, Any] = {"storage": storage, "num_replicas": config.replicas}
        specs = [
            api.StreamConfig(
                name=self.stream,
                subjects=[self.events_subjects],
                duplicate_window=config.duplicate_window,
                max_age=config.max_age,
                max_msgs=config.max_messages or -1,
                **common,
            ),
            api.StreamConfig(
                name=self.groups_stream,
                subjects=[f"{config.subject_prefix}._group.*.*"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                duplicate_window=config.duplicate_window,
                **common,
            ),
        ]
        for spec in specs:
            await self._make_stream(js, spec)
        self._streams_ready = True

    async def _make_stream(self, js: JetStreamContext, spec: nats.js.api.StreamConfig) -> None:
        try:
            await js.add_stream(spec)
            return
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # 10058: the name exists with another configuration
                raise EventBusError(
                    f"{self._where} refused stream {spec.name!r} with subjects {spec.subjects}: "
                    f"{exc.description}; choose another subject_prefix or stream"
                ) from exc
        info = await js.stream_info(spec.name or "")
        if spec.subjects and spec.subjects[0] not in (info.config.subjects or []):
            raise EventBusError(
                f"stream {spec.name!r} on {self._where} exists with subjects "
                f"{info.config.subjects}, not {spec.subjects}; choose another stream name"
            )

    async def _retrying(
        self, operation: Callable[[], Awaitable[T]], what: str, refused: type[EventBusError]
    ) -> T:
        """Run `operation`, retrying through a lost connection for `reconnect_timeout`."""
        deadline, attempt = time.monotonic() + self.config.reconnect_timeout, 0
        while True:
            try:
                return await operation()
            except _LOST as exc:
                if isinstance(exc, nats.js.errors.NoStreamResponseError):
                    self._streams_ready = False  # deleted, or JetStream not ready yet
                attempt += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BusConnectionError(
                        f"could not {what}: {self._where} unreachable for "
                        f"{self.config.reconnect_timeout:g} s ({exc!r}); check that nats-server "
                        "runs with JetStream, then retry (events carry ids: a re-publish inside "
                        "the duplicate window is dropped)"
                    ) from exc
                await asyncio.sleep(min(left, backoff_delay(attempt, base=0.05, cap=1.0)))
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                raise refused(f"could not {what}: {self._where} refused it: {exc!r}") from exc

    # -- publishing ----------------------------------------------------------------------

    def event_subject(self, event: DomainEvent) -> str:
        """`{prefix}.{aggregate_type}.{aggregate_id}` of `event`."""
        aggregate = subject_token(event.aggregate_type)
        return f"{self.config.subject_prefix}.{aggregate}.{subject_token(str(event.aggregate_id))}"

    async def _publish(self, events: Sequence[DomainEvent]) -> None:
        messages = [
            (self.event_subject(event), body, {**headers, MSG_ID: str(event.event_id)})
            for event, (body, headers) in zip(events, _wire.encode_all(events), strict=True)
        ]
        await self._send(messages, f"publish {len(events)} events to stream {self.stream!r}")
        self.stats.published += len(events)

    async def _send(self, messages: list[tuple[str, bytes, dict[str, str]]], what: str) -> None:
        """Publish in order, pipelined, and wait for every confirm; after a lost connection
        send again from the first unconfirmed message (duplicates are dropped by id)."""
        left = list(messages)

        async def send() -> None:
            nonlocal left
            js = await self._jetstream()
            refuse_oversized(left, self._nc.max_payload if self._nc else 0, what)
            if len(left) == 1:  # one request: cheaper than a future and a wait
                subject, body, headers = left[0]
                timeout = self.config.request_timeout
                await js.publish(subject, body, timeout=timeout, headers=clean_headers(headers))
                left = []
                return
            futures: list[asyncio.Future[Any]] = []
            try:
                for subject, body, headers in left:
                    future = await js.publish_async(subject, body, headers=clean_headers(headers))
                    futures.append(future)
            finally:
                await self._confirmed(futures)
                for future in futures:
                    future.cancel()  # no effect on a done one; frees an unanswered one
            for n, future in enumerate(futures):
                error = TimeoutError() if future.cancelled() else future.exception()
                if error is not None:
                    left = left[n:]
                    raise error
            left = []

        try:
            await self._retrying(send, what, BusPublishError)
        except EventBusError as exc:
            if done := len(messages) - len(left):
                message = f"{exc} ({done} of {len(messages)} messages were confirmed)"
                raise type(exc)(message) from exc.__cause__
            raise

    async def _confirmed(self, futures: list[asyncio.Future[Any]]) -> None:
        """Wait for the confirms while they keep coming: a large batch on a slow server is
        not cut off, a connection that stopped answering is given up after one
        `request_timeout` without any."""
        waiting: set[asyncio.Future[Any]] = set(futures)
        while waiting:
            done, waiting = await asyncio.wait(waiting, timeout=self.config.request_timeout)
            if not done:
                return

    # -- consuming -------------------------------------------------------------------------

    @property
    def consuming(self) -> bool:
        return any(not task.done() for task in self._tasks[:2])  # the two fetch loops

    async def start_consuming(self) -> None:
        if self.consuming:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._held.clear()
        self._subs = await self._retrying(
            self._subscribe,
            f"join group {self.config.broker_group!r} on stream {self.stream!r}",
            EventBusError,
        )
        name = f"bus:{self.config.consumer_name}"
        self._tasks = [
            asyncio.create_task(self._consume(retry=False), name=name),
            asyncio.create_task(self._consume(retry=True), name=f"{name}:retries"),
            asyncio.create_task(self._keep_held(), name=f"{name}:progress"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._consumer_done)

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "NATS bus %s: %s died", self.client_name, task.get_name(), exc_info=task.exception()
            )

    async def _subscribe(self) -> dict[bool, JetStreamContext.PullSubscription]:
        """Pull subscriptions to the group's two durable consumers (made if new), by `retry`."""
        return {retry: await self._subscribe_one(retry=retry) for retry in (False, True)}

    async def _subscribe_one(self, *, retry: bool) -> JetStreamContext.PullSubscription:
        js, api = await self._jetstream(), nats.js.api
        stream, subject = (
            (self.groups_stream, self.retry_subject)
            if retry
            else (self.stream, self.events_subjects)
        )
        config = api.ConsumerConfig(
            durable_name=self.durable,
            # a new group starts with the events published from now on, its retries at once
            deliver_policy=api.DeliverPolicy.ALL if retry else api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self.config.ack_wait,
            max_deliver=-1,
            filter_subject=subject,
        )
        return await js.pull_subscribe(subject, durable=self.durable, stream=stream, config=config)

    async def _consume(self, *, retry: bool) -> None:
        failures, idle = 0, 0
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping:
            self._fetching.add(task)
            try:
                batch = await self._subs[retry].fetch(
                    self.config.batch_size, timeout=self.config.fetch_wait
                )
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                task.uncancel()
                return
            except TimeoutError:  # nothing came: ask again, now and then checking the consumer
                idle += 1
                if idle % _CHECK_EVERY == 0 and not await self._joined(retry=retry):
                    await self._rejoin(retry=retry)
                continue
            except _FAILED as exc:
                failures += 1
                logger.warning("%s: fetch on %s failed (%r)", self._where, self.durable, exc)
                await asyncio.sleep(backoff_delay(failures, base=0.05, cap=2.0))
                if isinstance(exc, nats.js.errors.Error):  # the consumer or stream is gone
                    await self._rejoin(retry=retry)
                continue
            finally:
                self._fetching.discard(task)
            failures = idle = 0
            for msg in batch:
                self._held[id(msg)] = msg
            for msg in batch:
                async with self._handling:
                    try:
                        await self._deliver(msg, retry=retry)
                    except Exception:
                        logger.exception(
                            "%s: delivering %s failed; it comes again", self._where, msg
                        )
                        await self._settle(msg.nak(delay=1.0), f"give back {msg.subject}")
                self._held.pop(id(msg), None)

    async def _joined(self, *, retry: bool) -> bool:
        """False when the group's consumer is gone (deleted, or lost by a server that kept
        it in memory): then nothing would ever come, and the fetches would only time out."""
        try:
            await self._subs[retry].consumer_info()
        except nats.js.errors.NotFoundError:
            return False
        except _FAILED:
            pass  # unreachable for now: the next fetches say more
        return True

    async def _rejoin(self, *, retry: bool) -> None:
        """Make the consumer (and stream) again, after someone deleted it."""
        self._streams_ready = False
        try:
            fresh = await self._subscribe_one(retry=retry)
        except _REJOIN_FAILED as exc:
            logger.warning("%s: cannot join %s again yet (%r)", self._where, self.durable, exc)
            return
        old, self._subs[retry] = self._subs[retry], fresh
        with contextlib.suppress(*_FAILED):
            await old.unsubscribe()

    async def _keep_held(self) -> None:
        """Report progress on held messages, so that only a dead consumer's are redelivered."""
        while True:
            await asyncio.sleep(self.config.ack_wait / 3)
            for msg in list(self._held.values()):
                with contextlib.suppress(*_FAILED):
                    await msg.in_progress()

    # -- settling a message ----------------------------------------------------------------

    async def _deliver(self, msg: Msg, *, retry: bool) -> None:
        meta = msg.metadata
        headers = app_headers(msg.headers)
        origin = f"{meta.stream} message {meta.sequence.stream} ({msg.subject})"
        redelivered = meta.num_delivered > 1
        if retry:
            delay = seconds_of(headers.get(RETRY_DELAY, ""))
            if delay > 0 and meta.num_delivered == 1:
                await self._settle(msg.nak(delay=delay), f"hold back the retry {origin}")
                return
            redelivered = meta.num_delivered > (2 if delay > 0 else 1)
        if redelivered:
            self.stats.recovered += 1
        attempt = attempt_of(headers) if retry else 1
        outcome = await self._handle_message(headers, msg.data, attempt, origin)
        if outcome.verdict is not Verdict.ACK:
            sequence = headers.get(ORIGIN, f"{meta.sequence.stream}:{headers.get(_wire.EVENT_ID)}")
            try:
                await self._pass_on(headers, msg.data, outcome, attempt, sequence)
            except EventBusError as exc:
                logger.error("%s: cannot pass %s on (%s); it comes again", self._where, origin, exc)
                pause = backoff_delay(1, base=0.5, cap=1.0)
                await self._settle(msg.nak(delay=pause), f"give back {origin}")
                return
        await self._settle(msg.ack(), f"acknowledge {origin}")

    async def _pass_on(
        self,
        headers: Mapping[str, str],
        body: bytes,
        outcome: Outcome,
        attempt: int,
        sequence: str,
    ) -> None:
        """Send a failed message to the group's retry or dead-letter subject, confirmed,
        before the original is acknowledged: a crash in between re-sends it with the same
        message id, which JetStream drops."""
        group = subject_token(self.config.broker_group)
        if outcome.verdict is Verdict.RETRY:
            delay = self.config.delay_before(attempt + 1)
            copy = {
                **self._retry_headers(headers, outcome, attempt + 1),
                RETRY_DELAY: repr(delay),
                ORIGIN: sequence,
                MSG_ID: f"{group}:{sequence}:{attempt + 1}",
            }
            await self._send([(self.retry_subject, body, copy)], f"retry {sequence}")
        else:
            dead = {
                **self._dead_letter_headers(headers, outcome, attempt),
                ORIGIN: sequence,
                MSG_ID: f"{group}:{sequence}:dead",
            }
            await self._send([(self.dead_letter_subject, body, dead)], f"dead-letter {sequence}")

    async def _settle(self, settling: Awaitable[None], what: str) -> None:
        """An ACK or NAK; one the server misses leaves the message to be redelivered."""
        try:
            await settling
        except _FAILED as exc:
            logger.warning("%s: could not %s (%r); it will come again", self._where, what, exc)

    # -- stopping --------------------------------------------------------------------------

    async def stop_consuming(self) -> None:
        """Finishes the messages taken; a fetch still waiting is cancelled."""
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        self._stopping = True
        *loops, keeper = tasks
        for task in loops:
            if task in self._fetching:
                task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await _cancel(keeper)
        await self._unsubscribe()

    async def abort(self) -> None:
        tasks, self._tasks = self._tasks, []
        self._stopping = True
        for task in tasks:
            await _cancel(task)
        self._held.clear()
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        """Drop the pull subscriptions: the server stops handing this consumer messages."""
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            with contextlib.suppress(*_FAILED):
                await sub.unsubscribe()

    async def dead_letters(self, limit: int = 100) -> list[BusDeadLetter]:
        """Reads the group's dead letters by subject, oldest first, without consuming them."""

        async def read() -> list[BusDeadLetter]:
            js, sequence = await self._jetstream(), 1
            letters: list[BusDeadLetter] = []
            while len(letters) < limit:
                try:
                    raw = await js.get_msg(
                        self.groups_stream,
                        seq=sequence,
                        subject=self.dead_letter_subject,
                        next=True,
                    )
                except nats.js.errors.NotFoundError:
                    break
                at = raw.time or datetime.now(UTC)
                letters.append(
                    self._read_dead_letter(app_headers(raw.headers), raw.data or b"", at)
                )
                sequence = (raw.seq or sequence) + 1
            return letters

        return await self._retrying(read, f"read {self.dead_letter_subject}", EventBusError)

    async def close(self) -> None:
        await super().close()
        await self.stop_consuming()
        nc, self._nc, self._js = self._nc, None, None
        self._streams_ready = False
        if nc is not None:
            with contextlib.suppress(*_FAILED):
                await nc.close()


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
