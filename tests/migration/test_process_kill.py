"""A migrator process SIGKILLed mid-copy, twice, while writers keep appending: restarted, it
finishes with every event exactly once, in order, and `migrate verify` agrees."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from uuid import uuid4

from eventsource import ExpectedVersion
from eventsource.config import create_checkpoint_repository
from tests.migration._model import assert_same_events, write
from tests.migration.test_copy import _deposits, app_store, eventually

CHECKPOINT = "eventsource-migration:default"
MAIN = "import sys; from eventsource.cli import main; sys.exit(main())"


def migrate(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", MAIN, "migrate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_sigkilled_migrator_resumes_without_loss_or_duplicates(
    urls: tuple[str, str],
) -> None:
    source_url, target_url = urls
    where = ["--from", source_url, "--to", target_url]
    async with (
        app_store(source_url) as source,
        app_store(target_url) as target,
        create_checkpoint_repository(target_url) as state,
    ):
        for _ in range(150):
            await source.append_events(uuid4(), "Account", _deposits(10), ExpectedVersion.NO_STREAM)
        stop = asyncio.Event()
        writers = [asyncio.create_task(write(source, stop)) for _ in range(3)]

        async def copied() -> int:
            checkpoint = await state.get(CHECKPOINT)
            return 0 if checkpoint is None else checkpoint.events_processed

        for _ in range(2):
            before = await copied()
            process = migrate("copy", "--follow", "--batch-size", "20", *where)

            async def progressed(
                before: int = before, process: subprocess.Popen[bytes] = process
            ) -> bool:
                assert process.poll() is None, process.communicate()
                return await copied() >= before + 300

            await eventually(progressed)
            process.send_signal(signal.SIGKILL)
            assert process.wait() == -signal.SIGKILL
            assert await target.count_events() < await source.count_events()  # mid-copy
        stop.set()
        written = sum(await asyncio.gather(*writers))
        finish = migrate("copy", *where)
        _, err = finish.communicate()
        assert finish.returncode == 0, err
        assert "0 behind the source" in err.decode()
        check = migrate("verify", *where)
        out, err = check.communicate()
        assert check.returncode == 0, (out, err)
        assert out.decode().strip().endswith(": match")
        assert await assert_same_events(source, target) == 1500 + written
