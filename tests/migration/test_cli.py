"""`eventsource migrate`: exit statuses, one-line errors and output of each subcommand."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import pytest

from eventsource import ExpectedVersion, Position
from eventsource.cli import main
from eventsource.cli.migrate import format_progress
from eventsource.config import create_checkpoint_repository
from eventsource.migration import CopyProgress
from tests.migration.test_copy import _deposits, app_store

pytestmark = pytest.mark.sqlite


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["migrate", *args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["copy", "--from", "nope", "--to", "memory://"], "'nope' is not a store URL"),
        (
            ["status", "--from", "memory://", "--to", "memory://", "--tenant", "x"],
            "not a tenant id",
        ),
        (["verify", "--to", "memory://"], "--from"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, err = run(capsys, *args)
    assert status == 2
    assert message in err
    assert out == ""


def test_the_same_store_on_both_sides_is_refused(
    capsys: pytest.CaptureFixture[str], make_url: Callable[[str], str]
) -> None:
    url = make_url("sqlite")
    status, _, err = run(capsys, "copy", "--from", url, "--to", url)
    assert status == 2
    assert err.count("\n") == 1
    assert "name the same store" in err


async def test_copy_status_verify_and_map(
    capsys: pytest.CaptureFixture[str], make_url: Callable[[str], str]
) -> None:
    source_url, target_url = make_url("sqlite"), make_url("sqlite")
    where = ["--from", source_url, "--to", target_url]
    async with app_store(source_url) as source:
        stream = uuid4()
        result = await source.append_events(
            stream, "Account", _deposits(5), ExpectedVersion.NO_STREAM
        )
        async with create_checkpoint_repository(source_url) as checkpoints:
            await checkpoints.save("ledger", result.positions[2])
    status, out, err = await _thread(run, capsys, "status", *where)
    assert (status, err) == (0, "")
    assert "copied 0 events up to source position not started; 5 behind" in out
    status, _, err = await _thread(run, capsys, "copy", "--batch-size", "2", *where)
    assert status == 0
    assert "copied 5 events, 0 to go" in err
    assert "copied 5 events; 0 behind the source" in err
    status, out, _ = await _thread(run, capsys, "verify", *where)
    assert (status, out) == (0, "1 streams, 5 source events, 5 target events: match\n")
    status, out, _ = await _thread(run, capsys, "map-checkpoints", *where)
    assert status == 0
    assert out.splitlines() == [f"ledger: {result.positions[2]} -> 0-3", "mapped 1 checkpoints"]
    async with app_store(target_url) as target:
        await target.append_events(stream, "Account", _deposits(1), 5)
    status, out, _ = await _thread(run, capsys, "verify", *where)
    assert status == 1
    assert out.splitlines()[0] == f"{stream}: event counts differ (source 5, target 6)"


async def _thread(function: Callable[..., object], *args: object) -> tuple[int, str, str]:
    """Run a command (which runs its own event loop) outside this test's loop."""
    import asyncio

    return await asyncio.to_thread(function, *args)  # type: ignore[return-value]


def test_progress_line_shows_count_rate_and_eta() -> None:
    line = format_progress(CopyProgress(1200, 3600, Position(0, 1200), 2.0))
    assert line == "copied 1,200 events, 3,600 to go, 600 events/s, ETA 00:00:06"
