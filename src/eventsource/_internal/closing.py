"""`AsyncClosing`: `async with thing:` closes it, for every store, repository and manager."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self, TypeVar

__all__ = ["AsyncClosing", "closing_iterator"]

T = TypeVar("T")


@contextlib.asynccontextmanager
async def closing_iterator(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close `iterator` (an async generator holding a connection) when the block ends, even
    when the loop over it broke off, returned or was cancelled; the garbage collector would
    close it only later, in another task."""
    try:
        yield iterator
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


class AsyncClosing:
    """Gives a class with `async close()` the async context manager protocol."""

    async def close(self) -> None:
        """Release what the object holds; objects holding nothing need not override this."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
