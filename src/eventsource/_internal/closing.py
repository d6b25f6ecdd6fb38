"""`AsyncClosing`: `async with thing:` closes it, for every store, repository and manager."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncClosing"]


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
