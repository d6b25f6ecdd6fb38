"""`PageReader`: whole pages of the feed for a subscription whose handler takes pages, the next
page read while the current one is applied.

A handler that takes pages (`BatchHandler`, e.g. a `DatabaseProjection`) spends a transaction
on each; the read of the next page does not depend on it, so after a full page the reader
starts that read in a task of its own. The page read ahead is used only when the subscription
asks for the page after the position it was read after: the feed below a read's horizon never
changes, so an earlier read is still right, also after an outage or a pause. Anything else
(the subscription stopped part-way, went back to its checkpoint) cancels it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from eventsource._internal.closing import closing_iterator
from eventsource.stores.interface import EventStore, Position, ReadOptions, StoredEvent

__all__ = ["Page", "PageReader"]

Page = tuple[Position | None, list[StoredEvent]]
"""A page of the feed, and the feed's head read just before it (for a filtered subscription,
None otherwise): every event of interest up to that head is in the page when it is short."""


class PageReader:
    """Reads the pages of `options` (its `limit` is the page size) from `store`."""

    def __init__(self, store: EventStore, options: ReadOptions, *, with_head: bool) -> None:
        self._store = store
        self._options = options
        self._with_head = with_head
        self._ahead: tuple[Position, asyncio.Task[Page]] | None = None

    async def next(self, after: Position | None) -> Page:
        """The page after `after`: read ahead when the page before it was full, else now."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == after:
            head, page = await ahead[1]
        else:
            await _cancelled(ahead)
            head, page = await self._read(after)
        if page and len(page) == self._options.limit:  # more to read, while this is applied
            last = page[-1].position
            self._ahead = (last, asyncio.create_task(self._read(last)))
        return head, page

    async def close(self) -> None:
        """Cancel a read ahead (the subscription stops)."""
        ahead, self._ahead = self._ahead, None
        await _cancelled(ahead)

    async def _read(self, after: Position | None) -> Page:
        head = await self._store.current_position() if self._with_head else None
        async with closing_iterator(
            self._store.read_all(replace(self._options, after=after))
        ) as feed:
            return head, [stored async for stored in feed]


async def _cancelled(ahead: tuple[Position, asyncio.Task[Page]] | None) -> None:
    """A page read ahead that is not needed: cancelled, and its outcome dropped."""
    if ahead is not None:
        ahead[1].cancel()
        await asyncio.gather(ahead[1], return_exceptions=True)
