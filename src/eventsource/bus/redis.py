"""`RedisEventBus`: the bus on Redis Streams (Redis 7 or newer).

Keys under `stream_prefix`: `{prefix}:events`, the stream every publish appends to (field
`body` plus one field per header; a batch is one pipelined round trip), on which each consumer
group is a Redis consumer group; `{prefix}:delayed:{group}`, a sorted set where a failed
message waits for its retry delay before it moves to `{prefix}:retry:{group}`, a stream only
that group reads; `{prefix}:dlq:{group}`, the group's dead letters. `{group}` is
`config.broker_group` (a tenant consumer's group is per tenant).

A group seen for the first time starts at the end of the stream; an existing group resumes
where it stopped. An entry stays in the group's pending list until its consumer settles it:
XACK; or schedule the retry and XACK (one Lua script); or dead-letter and XACK (one MULTI), so
a message is never only in a process's memory. A running consumer refreshes the entries it
holds every `claim_idle / 3` s, so an entry idle for `claim_idle` belongs to a consumer that
died or froze: the others take it over (XAUTOCLAIM, every `claim_interval` s).

Trimming (`max_stream_length`) drops the oldest entries whether or not every group has read
them: a group that lags by more than that loses what it had not read (`stats.trimmed` counts
the pending entries found gone). The default, None, never trims.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit
from uuid import uuid4

from eventsource._internal.optional import require
from eventsource._internal.retry import backoff_delay
from eventsource.bus import _wire
from eventsource.bus.interface import BusDeadLetter, BusStats, EventBus, EventBusConfig, Verdict
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.exceptions import (
    BusConnectionError,
    BusPublishError,
    ConfigurationError,
    EventBusError,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.typing import EncodableT, FieldT

__all__ = ["RedisEventBus", "RedisEventBusConfig", "RedisEventBusStats"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_Entry = tuple[bytes, dict[bytes, bytes]]
_Fields = dict["FieldT", "EncodableT"]

# Retry: park the message in the delayed set (due by the server's clock) and settle the entry.
_SCHEDULE_RETRY = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[5] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
return 1
"""
# Move due retries into the group's retry stream; return ms until the next is due (-1: none).
_MOVE_DUE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, message in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'message', message)
  redis.call('ZREM', KEYS[1], message)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] == nil then return -1 end
return math.max(0, tonumber(first[2]) - now)
"""
# Forget a stopped consumer, but only when it holds nothing (DELCONSUMER drops its pending).
_FORGET_CONSUMER = """
for _, key in ipairs(KEYS) do
  if #redis.call('XPENDING', key, ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
end
for _, key in ipairs(KEYS) do redis.call('XGROUP', 'DELCONSUMER', key, ARGV[1], ARGV[2]) end
return 1
"""


_DEFAULT_URL = "redis://localhost:6379/0"


@dataclass(kw_only=True)
class RedisEventBusConfig(EventBusConfig):
    """Where the streams are and how the consumer paces itself; seconds unless said otherwise."""

    url: str = field(default=_DEFAULT_URL, repr=False)
    """Kept out of the repr: it may hold a password."""
    stream_prefix: str = "eventsource"
    batch_size: int = 32
    """Entries one XREADGROUP takes; `stop_consuming()` finishes those taken first."""
    block: float = 2.0
    """How long a read waits for new entries before the consumer looks at retries again."""
    claim_idle: float = 60.0
    """Idle time after which a pending entry is taken over (its consumer died or froze)."""
    claim_interval: float = 5.0
    """How often a consumer looks for entries to take over."""
    max_stream_length: int | None = None
    """Approximate MAXLEN of the events stream; trimming can drop entries a group has not
    read yet (see the module docs). None never trims."""
    dlq_max_length: int | None = None
    """Approximate MAXLEN of each group's dead-letter stream; None keeps every dead letter."""
    reconnect_timeout: float = 10.0
    """How long a publish or an acknowledgement keeps retrying through connection errors."""
    socket_timeout: float = 10.0
    client_name: str | None = None
    """Name of the bus's connections in CLIENT LIST; default `eventsource:{group}:{consumer}`."""
    redis_url: str | None = field(default=None, repr=False)
    """The package guide's name of `url` (either may be given; after construction both hold
    the URL). `url` is the preferred spelling, shared by every bus's config."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.redis_url is None:
            self.redis_url = self.url
        elif self.url != _DEFAULT_URL and self.url != self.redis_url:
            raise ConfigurationError(
                "RedisEventBusConfig got two different URLs, url= and redis_url= (the same "
                "setting under two names); pass only url="
            )
        else:
            self.url = self.redis_url
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if not 0 < self.block < self.socket_timeout:
            raise ValueError("block must be positive and below socket_timeout")
        if self.claim_idle <= 0 or self.claim_interval <= 0:
            raise ValueError("claim_idle and claim_interval must be positive")
        for limit in (self.max_stream_length, self.dlq_max_length):
            if limit is not None and limit < 1:
                raise ValueError("max_stream_length and dlq_max_length must be None or >= 1")


@dataclass
class RedisEventBusStats(BusStats):
    trimmed: int = 0
    """Pending entries found deleted by trimming before this group handled them (lost)."""


class RedisEventBus(EventBus):
    """One consumer of `config.broker_group` on Redis Streams; see the module docs."""

    config: RedisEventBusConfig
    stats: RedisEventBusStats

    def __init__(
        self,
        config: RedisEventBusConfig,
        *,
        registry: EventRegistry | None = None,
        event_registry: EventRegistry | None = None,
    ) -> None:
        if event_registry is not None and registry is not None and event_registry is not registry:
            raise ConfigurationError(
                "RedisEventBus got registry= and event_registry= (the same setting under two "
                "names); pass only registry="
            )
        super().__init__(config, registry or event_registry)
        self.stats = RedisEventBusStats()
        # `require` raises RedisNotAvailableError (an ImportError) when redis is missing
        self._r: ModuleType = require("redis.asyncio", extra="redis", feature="RedisEventBus")
        retry = require("redis.asyncio.retry", extra="redis", feature="RedisEventBus")
        backoff = require("redis.backoff", extra="redis", feature="RedisEventBus")
        group, prefix = config.broker_group, config.stream_prefix
        self.client_name = re.sub(
            r"[^!-~]", "_", config.client_name or f"eventsource:{group}:{config.consumer_name}"
        )
        # No retries inside redis-py: the bus retries itself, and the consumer must see each
        # lost connection to read back what the server delivered on it.
        self._redis: Redis = self._r.Redis.from_url(
            config.url,
            protocol=2,
            client_name=self.client_name,
            socket_timeout=config.socket_timeout,
            retry=retry.Retry(backoff.NoBackoff(), 0),
        )
        self._events_key, self._retry_key = f"{prefix}:events", f"{prefix}:retry:{group}"
        self._delayed_key, self._dlq_key = f"{prefix}:delayed:{group}", f"{prefix}:dlq:{group}"
        self._schedule_retry = self._redis.register_script(_SCHEDULE_RETRY)
        self._move_due = self._redis.register_script(_MOVE_DUE)
        self._forget = self._redis.register_script(_FORGET_CONSUMER)
        parts = urlsplit(config.url)
        self._where = f"Redis at {parts.hostname}:{parts.port or 6379}"
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._held: dict[str, set[bytes]] = {self._events_key: set(), self._retry_key: set()}
        self._cursors = {self._events_key: b"0-0", self._retry_key: b"0-0"}
        self._stopping = self._aborting = self._in_read = False
        self._next_due = 0.0
        self._connected = False

    async def _retrying(
        self, operation: Callable[[], Awaitable[T]], what: str, refused: type[EventBusError]
    ) -> T:
        """Run `operation`, retrying through connection errors for `reconnect_timeout`."""
        deadline, attempt = time.monotonic() + self.config.reconnect_timeout, 0
        while True:
            try:
                return await operation()
            except self._r.AuthenticationError as exc:
                raise BusConnectionError(
                    f"could not {what}: {self._where} refused the credentials ({exc}); "
                    "check the user and password in the URL"
                ) from exc
            except (self._r.ConnectionError, self._r.TimeoutError) as exc:
                attempt += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BusConnectionError(
                        f"could not {what}: {self._where} unreachable for "
                        f"{self.config.reconnect_timeout:g} s ({exc}); check that Redis is "
                        "running, then retry (events carry ids, a re-publish is a duplicate)"
                    ) from exc
                await asyncio.sleep(min(left, backoff_delay(attempt, base=0.05, cap=2.0)))
            except self._r.RedisError as exc:
                raise refused(f"could not {what}: {self._where} refused it: {exc}") from exc

    async def _publish(self, events: Sequence[DomainEvent]) -> None:
        messages = [_fields(body, headers) for body, headers in _wire.encode_all(events)]
        key, maxlen = self._events_key, self.config.max_stream_length

        async def send() -> None:
            if len(messages) == 1:
                await self._redis.xadd(key, messages[0], maxlen=maxlen)
                return
            async with self._redis.pipeline(transaction=False) as pipe:
                for fields in messages:
                    pipe.xadd(key, fields, maxlen=maxlen)
                await pipe.execute()

        await self._retrying(send, f"publish {len(events)} events to {key}", BusPublishError)
        self.stats.published += len(events)

    # -- consuming -------------------------------------------------------------------------

    @property
    def consuming(self) -> bool:
        return self._task is not None and not self._task.done()

    async def connect(self) -> None:
        """Reach Redis and join the consumer group now (the package guide's first step).

        From then on events published reach this group even before `start_consuming()`, and
        `start_consuming()` blocks (the guide's behaviour). Raises `BusConnectionError` when
        Redis cannot be reached within `reconnect_timeout`.
        """
        what = f"join group {self.config.broker_group!r} on {self._events_key}"
        await self._retrying(self._create_groups, what, EventBusError)
        self._connected = True

    async def start_consuming(self, *, block: bool | None = None) -> None:
        """Join the group and handle its messages in a background task.

        Without `block` it returns once the consumer is registered, unless `connect()` was
        called first: then, as in the package guide, it blocks while the consumer runs, until
        `stop_consuming()`, `shutdown()` or `abort()` (or cancellation, which stops it).
        `block=True` / `block=False` choose explicitly.
        """
        if block is None:
            block = self._connected
        if not self.consuming:
            await self._start()
        task = self._task
        if not block or task is None:
            return
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            await self.stop_consuming()
            raise
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error

    async def _start(self) -> None:
        what = f"join group {self.config.broker_group!r} on {self._events_key}"
        await self._retrying(self._create_groups, what, EventBusError)
        self._stopping = self._aborting = False
        for held in self._held.values():
            held.clear()
        name = f"bus:{self.config.consumer_name}"
        self._task = asyncio.create_task(self._consume(), name=name)
        self._task.add_done_callback(self._consumer_done)
        self._keeper = asyncio.create_task(self._keep_held(), name=f"{name}:keepalive")

    async def _create_groups(self) -> None:
        group, me = self.config.broker_group, self.config.consumer_name
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xgroup_create(self._events_key, group, "$", mkstream=True)
            pipe.xgroup_create(self._retry_key, group, "0", mkstream=True)
            pipe.xgroup_createconsumer(self._events_key, group, me)
            pipe.xgroup_createconsumer(self._retry_key, group, me)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not str(result).startswith("BUSYGROUP"):
                raise result

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("Redis bus consumer %s died", self.client_name, exc_info=task.exception())

    async def _consume(self) -> None:
        failures, recover, startup, next_claim = 0, True, True, 0.0
        while True:
            try:
                if recover:  # what the server delivered to this consumer but it did not settle
                    await self._recover_own(count=startup)
                    recover = startup = False
                if self._stopping or self._aborting:
                    return
                now = time.monotonic()
                if now >= next_claim:
                    full = await self._claim()
                    next_claim = now if full else now + self.config.claim_interval
                if now >= self._next_due:
                    await self._move_due_retries()
                if self._stopping:
                    return
                wait = min(self.config.block, next_claim - now, self._next_due - now)
                self._in_read = True
                try:
                    batch = await self._read(">", wait)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._aborting or not self._stopping or task is None:
                        raise
                    task.uncancel()
                    recover = True  # stop interrupted the read: settle what it may have taken
                    continue
                finally:
                    self._in_read = False
                await self._deliver_all(batch)
                failures = 0
            except (self._r.RedisError, EventBusError) as exc:
                if self._stopping:
                    return  # what this consumer holds is taken over after claim_idle
                failures += 1
                recover = True
                logger.warning("Redis bus %s: %s; resuming", self.client_name, exc)
                if "NOGROUP" in str(exc):  # the stream was deleted under the group
                    with contextlib.suppress(self._r.RedisError):
                        await self._create_groups()
                await asyncio.sleep(backoff_delay(failures, base=0.05, cap=5.0))

    async def _read(self, from_id: str, wait: float) -> list[tuple[str, list[_Entry]]]:
        streams = {self._events_key: from_id, self._retry_key: from_id}
        response: Any = await self._redis.xreadgroup(
            self.config.broker_group,
            self.config.consumer_name,
            streams,  # type: ignore[arg-type]
            count=self.config.batch_size,
            block=int(wait * 1000) if wait >= 0.001 else None,
        )
        return [(key.decode(), entries) for key, entries in response or () if entries]

    async def _recover_own(self, *, count: bool) -> None:
        """Read back this consumer's own pending entries (history) until none are left."""
        while batch := await self._read("0", 0):
            if count:
                self.stats.recovered += sum(len(entries) for _, entries in batch)
            await self._deliver_all(batch)

    async def _claim(self) -> bool:
        """Take over entries idle for `claim_idle`; True when a whole batch was taken."""
        full = False
        for key in (self._events_key, self._retry_key):
            cursor, entries, *deleted = await self._redis.xautoclaim(
                key,
                self.config.broker_group,
                self.config.consumer_name,
                int(self.config.claim_idle * 1000),
                self._cursors[key],
                count=self.config.batch_size,
            )
            self._cursors[key] = cursor
            if deleted and deleted[0]:
                self.stats.trimmed += len(deleted[0])
                logger.error("%s: pending entries trimmed before being handled", key)
            entries = [entry for entry in entries if entry[0] is not None]
            self.stats.recovered += len(entries)
            full = full or len(entries) >= self.config.batch_size
            await self._deliver_all([(key, entries)])
        return full

    async def _move_due_retries(self) -> None:
        keys, args = [self._delayed_key, self._retry_key], [self.config.batch_size]
        wait_ms = await self._move_due(keys=keys, args=args)
        wait = wait_ms / 1000 if wait_ms >= 0 else self.config.claim_interval
        self._next_due = time.monotonic() + wait

    async def _keep_held(self) -> None:
        """Reset the idle time of held entries, so that only a dead consumer's are taken."""
        group, me = self.config.broker_group, self.config.consumer_name
        while True:
            await asyncio.sleep(self.config.claim_idle / 3)
            for key, held in self._held.items():
                if held:
                    with contextlib.suppress(self._r.RedisError):
                        await self._redis.xclaim(key, group, me, 0, list(held), justid=True)

    # -- settling an entry -----------------------------------------------------------------

    async def _deliver_all(self, batch: list[tuple[str, list[_Entry]]]) -> None:
        for key, entries in batch:
            self._held[key].update(entry_id for entry_id, _ in entries)
        for key, entries in batch:
            for entry_id, fields in entries:
                await self._deliver(key, entry_id, fields)
                self._held[key].discard(entry_id)

    async def _deliver(self, key: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        retry, where = key == self._retry_key, f"{key} entry {entry_id.decode()}"
        if not fields:  # deleted (trimmed) while pending: nothing left to handle
            self.stats.trimmed += 1
            await self._settle(key, entry_id, where)
            return
        headers, body = _unpack_retry(fields) if retry else _unpack(fields)
        attempt = int(headers.get(_wire.ATTEMPT, "2")) if retry else 1
        outcome = await self._handle_message(headers, body, attempt, where)
        if outcome.verdict is Verdict.ACK:
            await self._settle(key, entry_id, where)
        elif outcome.verdict is Verdict.RETRY:
            delay = self.config.delay_before(attempt + 1)
            message = _pack_retry(self._retry_headers(headers, outcome, attempt + 1), body)
            args = [self.config.broker_group, entry_id, int(delay * 1000), message, int(retry)]
            await self._retrying(
                lambda: self._schedule_retry(keys=[key, self._delayed_key], args=args),
                f"schedule the retry of {where}",
                EventBusError,
            )
            self._next_due = min(self._next_due, time.monotonic() + delay)
        else:
            dead = _fields(body, self._dead_letter_headers(headers, outcome, attempt))
            await self._settle(key, entry_id, where, dead_letter=dead)

    async def _settle(
        self, key: str, entry_id: bytes, where: str, *, dead_letter: _Fields | None = None
    ) -> None:
        """XACK the entry; in one MULTI with its dead letter, and with XDEL for a retry."""

        async def settle() -> None:
            if key == self._events_key and dead_letter is None:
                await self._redis.xack(key, self.config.broker_group, entry_id)
                return
            async with self._redis.pipeline(transaction=True) as pipe:
                if dead_letter is not None:
                    pipe.xadd(self._dlq_key, dead_letter, maxlen=self.config.dlq_max_length)
                pipe.xack(key, self.config.broker_group, entry_id)
                if key == self._retry_key:
                    pipe.xdel(key, entry_id)
                await pipe.execute()

        await self._retrying(settle, f"acknowledge {where}", EventBusError)

    # -- stopping --------------------------------------------------------------------------

    async def stop_consuming(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        self._stopping = True
        if self._in_read:
            task.cancel()
        await task
        await self._stop_keeper()
        with contextlib.suppress(self._r.RedisError):
            await self._forget(
                keys=[self._events_key, self._retry_key],
                args=[self.config.broker_group, self.config.consumer_name],
            )

    async def abort(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        self._aborting = True
        await _cancel(task)
        await self._stop_keeper()

    async def _stop_keeper(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            await _cancel(keeper)

    async def dead_letters(self, limit: int = 100) -> list[BusDeadLetter]:
        async def read() -> Any:
            return await self._redis.xrange(self._dlq_key, count=limit)

        entries = await self._retrying(read, f"read {self._dlq_key}", EventBusError)
        return [
            self._read_dead_letter(
                *_unpack(fields), datetime.fromtimestamp(int(entry_id.split(b"-")[0]) / 1000, UTC)
            )
            for entry_id, fields in entries
        ]

    async def close(self) -> None:
        await super().close()
        await self.stop_consuming()
        await self._redis.aclose()


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it to end. The cancellation is repeated: on Python 3.11,
    `asyncio.wait_for` (which redis-py uses) drops one that arrives as its call completes."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)


def _fields(body: bytes, headers: Mapping[str, str]) -> _Fields:
    fields: _Fields = {"body": body}
    for name, value in headers.items():
        fields[name] = value
    return fields


def _unpack(fields: dict[bytes, bytes]) -> tuple[dict[str, str], bytes]:
    headers = {
        k.decode(errors="replace"): v.decode(errors="replace")
        for k, v in fields.items()
        if k != b"body"
    }
    return headers, fields.get(b"body", b"")


def _pack_retry(headers: dict[str, str], body: bytes) -> str:
    """One sorted-set member for a retry; the token keeps two equal retries apart."""
    blob = {"token": uuid4().hex, "headers": headers, "body": base64.b64encode(body).decode()}
    return json.dumps(blob, separators=(",", ":"))


def _unpack_retry(fields: dict[bytes, bytes]) -> tuple[dict[str, str], bytes]:
    """Headers and body of a retry entry; an unreadable one yields no headers, so decoding
    fails and the message is dead-lettered."""
    raw = fields.get(b"message", b"")
    try:
        blob = json.loads(raw)
        return dict(blob["headers"]), base64.b64decode(blob["body"])
    except (ValueError, KeyError, TypeError):
        return {}, raw
