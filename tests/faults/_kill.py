"""Killing the library's server processes with `pg_terminate_backend`, again and again.

The admin connection that does the killing is never one of the victims: it is excluded by its
own pid, and victims are chosen by database or by `application_name` (give the library's
engine ``connect_args={"server_settings": {"application_name": name}}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

_BY_DATABASE = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)
_BY_APPLICATION = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE application_name = $1 AND pid <> pg_backend_pid()"
)


class BackendKiller:
    """Terminates matching backends every `interval` seconds (a random pause in the range)
    while `running()` is entered; `kills` counts the backends terminated."""

    def __init__(
        self,
        admin_url: str,
        *,
        database: str | None = None,
        application_name: str | None = None,
        interval: tuple[float, float] = (0.2, 0.5),
    ) -> None:
        if (database is None) == (application_name is None):
            raise ValueError("kill by database or by application_name (one of them)")
        self.admin_url = admin_url
        self._sql, self._target = (
            (_BY_DATABASE, database)
            if database is not None
            else (_BY_APPLICATION, application_name)
        )
        self.interval = interval
        self.kills = 0
        self.rounds = 0

    async def kill_once(self, admin: Any) -> int:
        killed = int(await admin.fetchval(self._sql, self._target))
        self.kills += killed
        self.rounds += 1
        return killed

    async def _loop(self) -> None:
        import asyncpg

        admin = await asyncpg.connect(self.admin_url)
        try:
            while True:
                await asyncio.sleep(random.uniform(*self.interval))
                await self.kill_once(admin)
        finally:
            await admin.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BackendKiller]:
        task = asyncio.create_task(self._loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
