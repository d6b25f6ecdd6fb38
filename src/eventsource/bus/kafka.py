"""`KafkaEventBus`: the bus on Apache Kafka, or a broker speaking its protocol, via aiokafka.

Names, for the events topic `T` (`KafkaEventBusConfig.topic`) and consumer group `G`
(`config.broker_group`: a tenant consumer's group is per tenant):

- `T`: every publish. The key is the aggregate id, so one aggregate's events share a partition
  and keep their order, whichever consumer of a group owns it. A batch is sent whole, then its
  acknowledgements are awaited together (idempotent producer, `acks="all"` by default).
- Kafka consumer group `T.G` reads `T` and `T.G.retry`. Offsets are committed only for
  messages that are done (handled, or their retry or dead letter acknowledged by the broker),
  after each fetched batch of at most `commit_batch` messages, and before a rebalance gives the
  partitions away. A new group starts at the end of `T` (`auto_offset_reset="latest"`): that
  position is committed at its first join, so events published while it is stopped wait for it.
- `T.G.retry`: a failed message goes back here with its next attempt and due time; only G reads
  it. A message that is not due yet pauses its partition until it is (the assignment is kept,
  `T` goes on). Due times in one partition are not sorted (messages at different attempts
  share it), so a retry can wait behind another for up to `retry_delay_max`; never less than
  its own delay.
- `T.G.dlq`: G's dead letters; `dead_letters()` reads them without consuming them.

Ordering: per aggregate, across all consumers of a group, except that a retried event comes
after the aggregate's later events. Duplicates: what a consumer handled but had not committed
when it died, was evicted from the group or lost a commit (at most `commit_batch` messages)
comes again; a publish re-sent after a connection error may be written twice (the idempotent
producer removes its own internal resends). Nothing is lost while the broker keeps the data.

Kafka keeps no delivery count, so `stats.recovered` counts messages a consumer left through
`abort()` (their offsets are recorded in the Kafka group `T.G.abandoned`); a process killed
outright is redelivered all the same, uncounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from eventsource._internal.optional import require
from eventsource._internal.retry import backoff_delay
from eventsource.bus import _wire
from eventsource.bus.interface import BusDeadLetter, EventBus, EventBusConfig, Verdict
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.exceptions import BusConnectionError, BusPublishError, EventBusError

if TYPE_CHECKING:
    import aiokafka
    from aiokafka import admin as kafka_admin
    from aiokafka import errors as kafka_errors
else:
    aiokafka = require("aiokafka", extra="kafka", feature="KafkaEventBus")
    kafka_admin = require("aiokafka.admin", extra="kafka", feature="KafkaEventBus")
    kafka_errors = require("aiokafka.errors", extra="kafka", feature="KafkaEventBus")

__all__ = ["KafkaEventBus", "KafkaEventBusConfig"]

logger = logging.getLogger(__name__)

_LEGAL_NAME = re.compile(r"[A-Za-z0-9._-]+")
_TOPIC_EXISTS = 36
_PUBLISH_ATTEMPTS = 3
_SETTLE_PAUSE = 1.0
"""Seconds before a message whose retry or dead letter could not be written is tried again."""
_Message = tuple[bytes | None, bytes, dict[str, str]]


@dataclass(kw_only=True)
class KafkaEventBusConfig(EventBusConfig):
    """Durable, acknowledged and ordered by default; shorten the timeouts only for tests."""

    bootstrap_servers: str = "localhost:9092"
    topic: str = "eventsource.events"
    """The events topic; each group's topics and Kafka group id are named after it."""
    partitions: int = 6
    """Partitions of the topics the bus creates (the most consumers a group can keep busy)."""
    replication_factor: int = 1
    create_topics: bool = True
    """Create missing topics at first use; with False they must exist."""
    auto_offset_reset: Literal["latest", "earliest"] = "latest"
    """Where a new group starts on the events topic: what is published from its first start
    on ("latest"), or everything the topic still retains ("earliest")."""
    commit_batch: int = 100
    """Most messages handled between two offset commits (and redelivered if a consumer dies)."""
    session_timeout: float = 10.0
    heartbeat_interval: float = 3.0
    rebalance_timeout: float = 30.0
    """How long a rebalance waits for this consumer to finish the batch in hand."""
    linger: float = 0.0
    """Seconds the producer waits to fill a batch (batches of one publish are sent together)."""
    enable_idempotence: bool = True
    acks: Literal[0, 1, "all"] = "all"
    request_timeout: float = 40.0
    connect_timeout: float = 30.0
    """How long connecting (and joining the group) may take before `BusConnectionError`."""
    client_options: Mapping[str, Any] = field(default_factory=dict)
    """More keyword arguments for every aiokafka client, such as TLS and SASL settings
    (`security_protocol`, `ssl_context`, `sasl_mechanism`, `sasl_plain_username`, ...)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for what, name in (("topic", self.topic), ("consumer_group", self.consumer_group)):
            if not _LEGAL_NAME.fullmatch(name):
                raise ValueError(f"{what} {name!r} may hold only letters, digits, '.', '_', '-'")
        if len(self.dead_letter_topic) > 249:
            raise ValueError("topic and consumer_group are too long for Kafka topic names")
        if min(self.partitions, self.replication_factor, self.commit_batch) < 1:
            raise ValueError("partitions, replication_factor and commit_batch must be >= 1")
        if not 0 < self.heartbeat_interval < self.session_timeout < self.request_timeout:
            raise ValueError("need 0 < heartbeat_interval < session_timeout < request_timeout")
        if self.enable_idempotence and self.acks != "all":
            raise ValueError('an idempotent producer needs acks="all"')

    @property
    def group_id(self) -> str:
        """The Kafka consumer group of `broker_group` on this topic."""
        return f"{self.topic}.{self.broker_group}"

    @property
    def retry_topic(self) -> str:
        return f"{self.group_id}.retry"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.group_id}.dlq"


class KafkaEventBus(EventBus):
    """One consumer of one group on a Kafka topic; see the module docstring for the layout."""

    config: KafkaEventBusConfig

    def __init__(
        self, config: KafkaEventBusConfig | None = None, *, registry: EventRegistry | None = None
    ) -> None:
        super().__init__(config or KafkaEventBusConfig(), registry)
        self._lock = asyncio.Lock()
        self._admin_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._producer: Any = None
        self._admin: Any = None
        self._ready_topics: set[str] = set()
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._settled = asyncio.Event()
        """Clear from the start of a rebalance until this consumer has set up what it got."""
        self._done: dict[Any, int] = {}
        """Next offset per partition of the messages done but not committed yet."""
        self._in_flight: tuple[Any, int] | None = None
        self._abandoned: dict[Any, int] = {}
        self._timers: set[asyncio.TimerHandle] = set()

    # -- connections ---------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        config = self.config
        return {
            "bootstrap_servers": config.bootstrap_servers,
            "client_id": f"eventsource-{config.broker_group}-{config.consumer_name}",
            "request_timeout_ms": int(config.request_timeout * 1000),
            **config.client_options,
        }

    async def _started(self, make: Callable[[], Any], what: str) -> Any:
        """A started client, retrying while the broker cannot be reached (`connect_timeout`)."""
        deadline = time.monotonic() + self.config.connect_timeout
        attempt = 0
        while True:
            client = make()
            try:
                await asyncio.wait_for(client.start(), max(0.1, deadline - time.monotonic()))
                return client
            except (kafka_errors.KafkaConnectionError, TimeoutError) as exc:
                await _stop_quietly(client)
                attempt += 1
                pause = backoff_delay(attempt, base=0.1, cap=2.0)
                if time.monotonic() + pause >= deadline:
                    raise BusConnectionError(
                        f"cannot reach Kafka at {self.config.bootstrap_servers} for the {what} "
                        f"within {self.config.connect_timeout:g} s: {exc or type(exc).__name__}; "
                        "check bootstrap_servers and that the broker is up"
                    ) from exc
                await asyncio.sleep(pause)
            except kafka_errors.KafkaError as exc:
                await _stop_quietly(client)
                hint = (
                    "; if this broker has no idempotent producers, set enable_idempotence=False"
                    if what == "producer" and self.config.enable_idempotence
                    else ""
                )
                error = BusPublishError if what == "producer" else EventBusError
                raise error(f"Kafka refused to start the {what}: {exc!r}{hint}") from exc

    async def _admin_client(self) -> Any:
        async with self._admin_lock:
            if self._admin is None:
                self._admin = await self._started(
                    lambda: kafka_admin.AIOKafkaAdminClient(**self._options()), "admin client"
                )
            return self._admin

    async def _ensure_topics(self, *names: str) -> None:
        missing = [name for name in names if name not in self._ready_topics]
        if not missing:
            return
        if self.config.create_topics:
            admin = await self._admin_client()
            new = [
                kafka_admin.NewTopic(name, self.config.partitions, self.config.replication_factor)
                for name in missing
            ]
            try:
                response = await admin.create_topics(new)
            except kafka_errors.KafkaError as exc:
                error = BusConnectionError if _retriable(exc) else EventBusError
                raise error(f"cannot create Kafka topics {missing}: {exc!r}") from exc
            for name, code, *message in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    raise EventBusError(
                        f"Kafka refused to create topic {name!r} (error {code}: "
                        f"{message[0] if message else ''}); create it yourself and set "
                        "create_topics=False"
                    )
        self._ready_topics.update(missing)

    async def _get_producer(self) -> Any:
        async with self._lock:
            if self._producer is None:
                await self._ensure_topics(self.config.topic)
                self._producer = await self._started(
                    lambda: aiokafka.AIOKafkaProducer(
                        **self._options(),
                        acks=self.config.acks,
                        enable_idempotence=self.config.enable_idempotence,
                        linger_ms=int(self.config.linger * 1000),
                    ),
                    "producer",
                )
            return self._producer

    # -- publishing ----------------------------------------------------------------------

    async def _publish(self, events: Sequence[DomainEvent]) -> None:
        messages: list[_Message] = [
            (str(event.aggregate_id).encode() if event.is_attached else None, body, headers)
            for event, (body, headers) in zip(events, _wire.encode_all(events), strict=True)
        ]
        await self._send(self.config.topic, messages)
        self.stats.published += len(events)

    async def _send(self, topic: str, messages: Sequence[_Message]) -> None:
        """Send all, then await every acknowledgement; after a retriable failure, send again
        from the first message not acknowledged (so order holds; earlier ones may repeat)."""
        producer = await self._get_producer()
        pending = list(messages)
        for attempt in range(1, _PUBLISH_ATTEMPTS + 1):
            futures: list[asyncio.Future[Any]] = []
            failure: BaseException | None = None
            try:
                for key, value, headers in pending:
                    encoded = [(name, text.encode()) for name, text in headers.items()]
                    futures.append(await producer.send(topic, value, key=key, headers=encoded))
            except kafka_errors.KafkaError as exc:
                failure = exc
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = [n for n, result in enumerate(results) if isinstance(result, BaseException)]
            if failed:
                failure = results[failed[0]]
            if failure is None:
                return
            if not isinstance(failure, kafka_errors.KafkaError) or not _retriable(failure):
                raise BusPublishError(f"Kafka refused a publish to {topic!r}: {failure!r}")
            pending = pending[failed[0] if failed else len(futures) :]
            if attempt < _PUBLISH_ATTEMPTS:
                logger.warning("publish to %s failed (%r); sending again", topic, failure)
                await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=2.0))
        raise BusConnectionError(
            f"Kafka at {self.config.bootstrap_servers} did not acknowledge a publish to "
            f"{topic!r} after {_PUBLISH_ATTEMPTS} attempts: {failure!r}; it is safe to retry"
        )

    # -- consuming -----------------------------------------------------------------------

    @property
    def consuming(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start_consuming(self) -> None:
        async with self._start_lock:
            if not self.consuming:
                await self._start_consuming()

    async def _start_consuming(self) -> None:
        config = self.config
        await self._ensure_topics(config.topic, config.retry_topic, config.dead_letter_topic)
        await self._get_producer()  # retries and dead letters need it: fail now, not later
        self._stopping = False
        self._settled.clear()

        def make() -> Any:
            consumer = aiokafka.AIOKafkaConsumer(
                **self._options(),
                group_id=config.group_id,
                enable_auto_commit=False,
                # For uncommitted retry partitions and lapsed offsets; a new group's start on
                # the events topic is pinned by _settle.
                auto_offset_reset="earliest",
                session_timeout_ms=int(config.session_timeout * 1000),
                heartbeat_interval_ms=int(config.heartbeat_interval * 1000),
                rebalance_timeout_ms=int(config.rebalance_timeout * 1000),
            )
            consumer.subscribe(
                [config.topic, config.retry_topic], listener=_Rebalance(self, consumer)
            )
            return consumer

        consumer = await self._started(make, "consumer")
        try:
            await asyncio.wait_for(self._settled.wait(), config.connect_timeout)
        except TimeoutError as exc:
            await _stop_quietly(consumer)
            raise BusConnectionError(
                f"consumer group {config.group_id!r} gave this consumer no assignment within "
                f"{config.connect_timeout:g} s"
            ) from exc
        self._consumer = consumer
        self._task = asyncio.create_task(self._consume(consumer), name=f"bus:{config.group_id}")
        self._task.add_done_callback(_report_crash)

    async def _settle(self, consumer: Any, assigned: set[Any]) -> None:
        """After a rebalance: learn which of our partitions hold abandoned messages, and pin
        a new group's start on the events topic."""
        if not assigned:
            return
        admin = await self._admin_client()
        marks = await admin.list_consumer_group_offsets(
            f"{self.config.group_id}.abandoned", partitions=sorted(assigned)
        )
        self._abandoned = {tp: mark.offset for tp, mark in marks.items() if mark.offset > 0}
        events = sorted(tp for tp in assigned if tp.topic == self.config.topic)
        if self.config.auto_offset_reset == "earliest" or not events:
            return
        committed = await admin.list_consumer_group_offsets(self.config.group_id, partitions=events)
        fresh = [tp for tp in events if committed[tp].offset < 0]
        if fresh:
            ends = await consumer.end_offsets(fresh)
            await consumer.commit(ends)
            for tp, end in ends.items():
                consumer.seek(tp, end)

    async def _consume(self, consumer: Any) -> None:
        failures = 0
        while not self._stopping:
            try:
                batch = await consumer.getmany(
                    timeout_ms=1000, max_records=self.config.commit_batch
                )
            except kafka_errors.KafkaError as exc:
                failures += 1
                logger.warning("fetching from Kafka failed (%r); trying again", exc)
                await asyncio.sleep(backoff_delay(failures, base=0.1, cap=5.0))
                continue
            failures = 0
            self._idle.clear()
            try:
                await asyncio.sleep(0)  # the fetcher asks for more while this batch is handled
                await self._run(consumer, batch)
                await self._commit(consumer)
            finally:
                self._idle.set()
            if not self._settled.is_set():
                await self._settled.wait()

    async def _run(self, consumer: Any, batch: Mapping[Any, Sequence[Any]]) -> None:
        """Handle a fetched batch in partition order; on a rebalance, stop or error, rewind
        each partition to its first message not done, for whoever reads it next."""
        for tp, records in batch.items():
            for record in records:
                if self._stopping or not self._settled.is_set():
                    self._rewind(consumer, batch, tp, record.offset)
                    return
                headers = _headers(record)
                retried = tp.topic == self.config.retry_topic
                due = _number(headers.pop(_wire.RETRY_AT, None), 0.0) if retried else 0.0
                if due > time.time():
                    self._park(consumer, tp, record.offset, due)
                    break
                attempt = int(_number(headers.get(_wire.ATTEMPT), 1)) if retried else 1
                try:
                    await self._deliver(tp, record, headers, attempt)
                except (EventBusError, kafka_errors.KafkaError) as exc:
                    logger.error("could not settle %s@%d, will retry: %r", tp, record.offset, exc)
                    self._rewind(consumer, batch, tp, record.offset)
                    await asyncio.sleep(_SETTLE_PAUSE)
                    return

    async def _deliver(self, tp: Any, record: Any, headers: dict[str, str], attempt: int) -> None:
        if record.offset < self._abandoned.get(tp, 0):
            self.stats.recovered += 1
        self._in_flight = (tp, record.offset)  # until done: abort() reports it abandoned
        origin = f"{tp.topic}[{tp.partition}]@{record.offset}"
        outcome = await self._handle_message(headers, record.value or b"", attempt, origin)
        if outcome.verdict is Verdict.RETRY:
            retry = self._retry_headers(headers, outcome, attempt + 1)
            retry[_wire.RETRY_AT] = f"{time.time() + self.config.delay_before(attempt + 1):.3f}"
            await self._send(self.config.retry_topic, [(record.key, record.value, retry)])
        elif outcome.verdict is Verdict.DEAD:
            dead = self._dead_letter_headers(headers, outcome, attempt)
            await self._send(self.config.dead_letter_topic, [(record.key, record.value, dead)])
        self._done[tp] = record.offset + 1
        self._in_flight = None

    @staticmethod
    def _rewind(consumer: Any, batch: Mapping[Any, Sequence[Any]], at: Any, offset: int) -> None:
        """Seek `at` back to `offset` and the batch's later partitions to their first record."""
        assignment = consumer.assignment()
        reached = False
        for tp, records in batch.items():
            reached = reached or tp == at
            if reached and records and tp in assignment:
                consumer.seek(tp, offset if tp == at else records[0].offset)

    def _park(self, consumer: Any, tp: Any, offset: int, due: float) -> None:
        """Leave a retry that is not due yet where it is and pause its partition till then."""
        consumer.seek(tp, offset)
        consumer.pause(tp)

        def wake() -> None:
            self._timers.discard(timer)
            if tp in consumer.paused():
                consumer.resume(tp)

        timer = asyncio.get_running_loop().call_later(due - time.time(), wake)
        self._timers.add(timer)

    async def _commit(self, consumer: Any) -> None:
        if not self._done:
            return
        offsets = dict(self._done)
        try:
            await consumer.commit(offsets)
        except (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError) as exc:
            logger.warning("group rebalanced before committing %s; redelivered: %r", offsets, exc)
        except kafka_errors.KafkaError as exc:
            logger.warning("committing %s failed, trying again later: %r", offsets, exc)
            return
        for tp, offset in offsets.items():
            if self._done.get(tp) == offset:
                del self._done[tp]

    async def stop_consuming(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            self._stopping = True
            if self._idle.is_set():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._release_consumer()

    async def abort(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = dict(self._done)
        if self._in_flight is not None:
            tp, offset = self._in_flight
            left[tp] = max(left.get(tp, 0), offset + 1)
        self._done.clear()
        if left:
            await self._mark_abandoned(left)
        await self._release_consumer()

    async def _mark_abandoned(self, offsets: dict[Any, int]) -> None:
        """Record, for the next owner's `stats.recovered`, what was handed out uncommitted."""
        marker = aiokafka.AIOKafkaConsumer(
            **self._options(),
            group_id=f"{self.config.group_id}.abandoned",
            enable_auto_commit=False,
        )
        try:
            await asyncio.wait_for(marker.start(), 5)
            marker.assign(list(offsets))
            marker.pause(*offsets)
            await asyncio.wait_for(marker.commit(offsets), 5)
        except (kafka_errors.KafkaError, TimeoutError) as exc:
            logger.warning("could not record abandoned offsets %s: %r", offsets, exc)
        finally:
            await _stop_quietly(marker)

    async def _release_consumer(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await _stop_quietly(consumer)  # leaves the group: its partitions move on at once

    # -- dead letters --------------------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[BusDeadLetter]:
        topic = self.config.dead_letter_topic
        await self._ensure_topics(topic)
        admin = await self._admin_client()
        (described,) = await admin.describe_topics([topic])
        if described["error_code"] != 0:
            return []
        partitions = [
            aiokafka.TopicPartition(topic, p["partition"]) for p in described["partitions"]
        ]
        reader = await self._started(
            lambda: aiokafka.AIOKafkaConsumer(**self._options(), enable_auto_commit=False),
            "dead-letter reader",
        )
        taken: dict[Any, list[Any]] = {tp: [] for tp in partitions}
        try:
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            ends = await reader.end_offsets(partitions)
            open_ = {tp for tp in partitions if await reader.position(tp) < ends[tp]}
            deadline = time.monotonic() + self.config.request_timeout
            while open_ and time.monotonic() < deadline:
                for tp, batch in (await reader.getmany(*open_, timeout_ms=500)).items():
                    taken[tp].extend(r for r in batch if r.offset < ends[tp])
                    if batch[-1].offset + 1 >= ends[tp] or len(taken[tp]) >= limit:
                        open_.discard(tp)
        finally:
            await _stop_quietly(reader)
        records = sorted(
            (r for rs in taken.values() for r in rs[:limit]),
            key=lambda r: (r.timestamp, r.partition, r.offset),
        )
        return [
            self._read_dead_letter(
                _headers(r),
                r.value or b"",
                datetime.fromtimestamp(r.timestamp / 1000, UTC),
            )
            for r in records[:limit]
        ]

    async def close(self) -> None:
        await super().close()
        await self.stop_consuming()
        producer, admin, self._producer, self._admin = self._producer, self._admin, None, None
        for client in (producer, admin):
            if client is not None:
                await _stop_quietly(client)


class _Rebalance(aiokafka.ConsumerRebalanceListener):  # type: ignore[misc]
    """Waits for the batch in hand before giving partitions away (so its commit lands and no
    one else handles it again), and holds new messages until `_settle` ran."""

    def __init__(self, bus: KafkaEventBus, consumer: Any) -> None:
        self.bus = bus
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        self.bus._settled.clear()
        try:
            await asyncio.wait_for(self.bus._idle.wait(), self.bus.config.rebalance_timeout)
        except TimeoutError:
            logger.warning("a handler outlasted the rebalance; its messages will come again")

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        try:
            for attempt in range(1, 4):
                try:
                    await self.bus._settle(self.consumer, assigned)
                    return
                except (kafka_errors.KafkaError, EventBusError) as exc:
                    logger.warning("setting up partitions %s failed: %r", assigned, exc)
                    await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=1.0))
        finally:
            self.bus._settled.set()


def _headers(record: Any) -> dict[str, str]:
    return {name: (value or b"").decode(errors="replace") for name, value in record.headers}


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the Kafka consumer loop stopped", exc_info=task.exception())


def _retriable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, kafka_errors.KafkaTimeoutError)


async def _stop_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        await client.stop() if hasattr(client, "stop") else await client.close()
