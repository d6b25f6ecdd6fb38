"""The read side of `NATSEventStore` (a mixin): streams, the feed, lookups.

Forward reads go through an ephemeral pull consumer filtered on the subjects they need
(`fetch_messages`): a stream's subject, the whole store, or one aggregate type. Before that, a
direct get of the last message on the same filter answers the cheap cases in one round trip:
an unknown stream, a stream whose requested versions all sit in its last append, a feed with
nothing after the reader's position (the idle poll of a subscription). Backward reads of the
feed fetch one message per round trip, newest first (meant for the newest few events); a
backward stream read reads the stream's requested versions forward and reverses them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from uuid import UUID

from eventsource._internal import nats as jsapi
from eventsource._internal.closing import closing_iterator
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import EventNotFoundError, TransientStoreError
from eventsource.stores._nats_messages import (
    COUNT,
    Batch,
    holds,
    index_of,
    position,
    version_of,
)
from eventsource.stores.interface import (
    DEFAULT_BATCH_SIZE,
    Position,
    ReadOptions,
    StoredEvent,
)

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["PAGE_RETRIES", "NATSReads"]

PAGE_RETRIES = 2
"""How many times in a row a page that timed out is asked for again before the read fails."""


class NATSReads:
    """Reads of a `NATSEventStore` (which supplies the attributes below)."""

    stream: str
    prefix: str
    _codec: EventCodec
    _timeout: float

    @abstractmethod
    async def _client(self) -> Client:
        """The connected client (`NATSEventStore` connects on first use)."""

    # -- single messages ---------------------------------------------------------------------

    async def _get(self, request: dict[str, object], what: str) -> jsapi.RawMessage | None:
        return await jsapi.direct_get(
            await self._client(),
            self.stream,
            request,
            what=f"NATS store {self.stream!r}: {what}",
            reply_wait=self._timeout,
        )

    async def _last_of_stream(
        self, aggregate_id: UUID, aggregate_type: str | None = None
    ) -> jsapi.RawMessage | None:
        """The stream's last message: on its own subject when the aggregate type is known
        (an indexed lookup), else on `<prefix>.*.<id>` (a wildcard the server must match)."""
        token = "*" if aggregate_type is None else jsapi.encode_token(aggregate_type)
        return await self._get(
            {"last_by_subj": f"{self.prefix}.{token}.{aggregate_id}"},
            f"read stream {aggregate_id}",
        )

    async def _message(self, seq: int) -> jsapi.RawMessage | None:
        return await self._get({"seq": seq}, f"read message {seq}")

    async def _fetch(
        self, client: Client, subject: str, start: int, batch: int, what: str
    ) -> AsyncIterator[jsapi.RawMessage]:
        """`fetch_messages` from `start` on. A page that does not come within the request
        timeout (a reply lost, a server starved of CPU for a moment) is asked for again by a
        new consumer, from the message after the last one yielded, up to `PAGE_RETRIES`
        times in a row; a read is idempotent, so nothing is skipped or repeated."""
        retries = PAGE_RETRIES
        while True:
            pages = jsapi.fetch_messages(
                client,
                self.stream,
                filter_subject=subject,
                start_seq=start,
                batch=batch,
                what=f"NATS store {self.stream!r}: {what}",
                reply_wait=self._timeout,
            )
            try:
                async with closing_iterator(pages):
                    async for message in pages:
                        start = message.seq + 1
                        retries = PAGE_RETRIES
                        yield message
                return
            except TransientStoreError as exc:
                if retries == 0 or not isinstance(exc.__cause__, TimeoutError):
                    raise
                retries -= 1

    # -- streams -----------------------------------------------------------------------------

    async def get_stream_version(self, aggregate_id: UUID) -> int:
        return version_of(await self._last_of_stream(aggregate_id))

    async def _stream_batches(
        self, aggregate_id: UUID, options: ReadOptions, low: int
    ) -> AsyncIterator[Batch]:
        """The stream's appends that hold versions from `low` on, oldest first."""
        if options.partition is not None:
            partition, count = options.partition
            if aggregate_id.int % count != partition:
                return
        last = await self._last_of_stream(aggregate_id, options.aggregate_type)
        if last is None:
            return
        batch = Batch.of(last)
        if options.aggregate_type is not None and batch.aggregate_type != options.aggregate_type:
            return
        if batch.first_version() <= low:
            yield batch
            return
        pages = self._fetch(
            await self._client(),
            last.subject,
            1,
            max(1, min(options.batch_size, 1000)),
            f"read stream {aggregate_id}",
        )
        async with closing_iterator(pages):
            async for message in pages:
                if version_of(message) < low:
                    continue  # ends before `low`
                yield Batch.of(message)

    async def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        low = max(options.from_version, 1)
        high = options.to_version
        if high is not None and high < low:
            return
        if options.limit == 0:
            return
        selected: list[StoredEvent] = []
        yielded = 0
        batches = self._stream_batches(aggregate_id, options, low)
        async with closing_iterator(batches):
            async for batch in batches:
                first = batch.first_version()
                start = max(low - first, 0)
                stop = len(batch.rows) if high is None else min(len(batch.rows), high - first + 1)
                for stored in batch.stored(self._codec, options, range(start, stop)):
                    if not options.forward:
                        selected.append(stored)
                        continue
                    yield stored
                    yielded += 1
                    if options.limit is not None and yielded >= options.limit:
                        return
                if high is not None and first + len(batch.rows) - 1 >= high:
                    break
        selected.reverse()
        for stored in selected[: options.limit]:
            yield stored

    # -- the feed ----------------------------------------------------------------------------

    def _feed_subject(self, options: ReadOptions) -> str:
        if options.aggregate_type is not None:
            return f"{self.prefix}.{jsapi.encode_token(options.aggregate_type)}.*"
        return f"{self.prefix}.>"

    async def current_position(self) -> Position:
        last = await self._get({"last_by_subj": f"{self.prefix}.>"}, "read the feed's end")
        if last is None:
            return Position.START
        return position(last.seq, int(last.headers[COUNT]) - 1)

    async def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        selected = self._select(options or ReadOptions())
        async with closing_iterator(selected):
            async for stored in selected:
                yield stored

    async def count_events(self, options: ReadOptions | None = None) -> int:
        """Counted by the store itself (the events are not decoded)."""
        count = 0
        selected = self._select(options or ReadOptions())
        async with closing_iterator(selected):
            async for _ in selected:
                count += 1
        return count

    async def _select(self, options: ReadOptions) -> AsyncIterator[StoredEvent]:
        """What `read_all(options)` yields."""
        if options.limit == 0:
            return
        if options.event_types is not None and not options.event_types:
            return
        yielded = 0
        feed = self._feed(options) if options.forward else self._feed_backward(options)
        async with closing_iterator(feed):
            async for batch, indexes in feed:
                if options.partition is not None:
                    partition, count = options.partition
                    if batch.aggregate_id.int % count != partition:
                        continue
                for stored in batch.stored(self._codec, options, indexes):
                    yield stored
                    yielded += 1
                    if options.limit is not None and yielded >= options.limit:
                        return

    async def _feed(self, options: ReadOptions) -> AsyncIterator[tuple[Batch, range]]:
        """The feed's appends after `options.after`, oldest first, with the indexes of their
        events that lie after it."""
        after = options.after or Position.START
        subject = self._feed_subject(options)
        last = await self._get({"last_by_subj": subject}, "read the feed's end")
        if last is None or last.seq < after.commit:
            return
        if last.seq == after.commit and int(last.headers[COUNT]) - 1 <= index_of(after):
            return
        pages = self._fetch(
            await self._client(),
            subject,
            max(after.commit, 1),
            max(1, min(options.batch_size, DEFAULT_BATCH_SIZE)),
            "read the feed",
        )
        async with closing_iterator(pages):
            async for message in pages:
                batch = Batch.of(message)
                first = max(index_of(after) + 1, 0) if message.seq == after.commit else 0
                yield batch, range(first, len(batch.rows))

    async def _feed_backward(self, options: ReadOptions) -> AsyncIterator[tuple[Batch, range]]:
        """The feed's appends before `options.after`, newest first (one round trip each),
        with the indexes of their events before it, newest first."""
        after = options.after
        top = await self._get({"last_by_subj": self._feed_subject(options)}, "read the feed")
        if top is None:
            return
        seq = top.seq if after is None else min(top.seq, after.commit)
        wanted = options.aggregate_type
        while seq >= 1:
            message = top if seq == top.seq else await self._message(seq)
            seq -= 1
            if message is None or not message.subject.startswith(f"{self.prefix}."):
                continue
            batch = Batch.of(message)
            if wanted is not None and batch.aggregate_type != wanted:
                continue
            end = len(batch.rows)
            if after is not None and message.seq == after.commit:
                end = min(end, index_of(after))
            yield batch, range(end - 1, -1, -1)

    # -- lookups -----------------------------------------------------------------------------

    async def _find(self, event_id: UUID) -> StoredEvent | None:
        """The stored event with this id: a scan of the stream's headers (`Es-Ids`), then
        one read of the message that holds it."""
        client = await self._client()
        scan = jsapi.fetch_messages(
            client,
            self.stream,
            filter_subject=f"{self.prefix}.>",
            start_seq=1,
            batch=DEFAULT_BATCH_SIZE,
            what=f"NATS store {self.stream!r}: look up event {event_id}",
            reply_wait=self._timeout,
            headers_only=True,
        )
        async with closing_iterator(scan):
            async for message in scan:
                if holds(message, event_id):
                    full = await self._message(message.seq)
                    if full is None:
                        return None
                    for stored in Batch.of(full).stored(self._codec, None):
                        if stored.event_id == event_id:
                            return stored
        return None

    async def event_exists(self, event_id: UUID) -> bool:
        return await self._find(event_id) is not None

    async def get_event(self, event_id: UUID) -> StoredEvent:
        found = await self._find(event_id)
        if found is None:
            raise EventNotFoundError(event_id)
        return found
