"""`eventsource events tail` on SQLite and PostgreSQL: where it starts, its filters, and
`--follow` in a real process seeing an event appended after it started, until Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any
from uuid import UUID, uuid4

import pytest

from eventsource.config import create_event_store
from eventsource.stores import Position
from eventsource.testing.events import ItemAdded, contract_registry
from tests.cli._cli import fill, one_line, run


def _lines(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    status, out, err = run(capsys, "events", "tail", *argv, "--json")
    assert (status, err) == (0, ""), err
    return [json.loads(line) for line in out.splitlines()]


def test_tail_starts_at_the_end_the_start_or_a_position(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    fill(store_url, {"Cart": [3, 2], "Order": [2]})
    everything = _lines(capsys, "--url", store_url, "--from-start")
    assert len(everything) == 7
    positions = [e["position"] for e in everything]
    assert len(set(positions)) == 7
    assert _lines(capsys, "--url", store_url) == everything[-7:]  # fewer than 10: all of them
    assert _lines(capsys, "--url", store_url, "--lines", "2") == everything[-2:]
    assert _lines(capsys, "--url", store_url, "--lines", "0") == []
    after = _lines(capsys, "--url", store_url, "--from-position", positions[3])
    assert after == everything[4:]

    status, out, err = run(capsys, "events", "tail", "--url", store_url, "--lines", "1")
    assert (status, err) == (0, "")
    last = everything[-1]
    assert out.startswith(f"{last['position']}  ")
    assert "CartCheckedOut/v1" in out


def test_tail_filters_by_type_and_stream(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    streams = fill(store_url, {"Cart": [3, 2]})
    checkouts = _lines(capsys, "--url", store_url, "--from-start", "--type", "CartCheckedOut")
    assert [e["type"] for e in checkouts] == ["CartCheckedOut"] * 2
    both = _lines(
        capsys,
        "--url",
        store_url,
        "--from-start",
        "--type",
        "CartCheckedOut",
        "--type",
        "ItemAdded",
    )
    assert len(both) == 5
    first = next(iter(streams))
    mine = _lines(capsys, "--url", store_url, "--from-start", "--stream", str(first))
    assert [(e["stream_id"], e["version"]) for e in mine] == [(str(first), v) for v in (1, 2, 3)]
    assert _lines(capsys, "--url", store_url, "--lines", "1", "--stream", str(first)) == mine[-1:]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from-position", "yesterday"], "is not a position token"),
        (["--from-start", "--from-position", "0-1"], "not allowed with argument"),
        (["--stream", "42"], "is not a stream id"),
        (["--lines", "-3"], "at least 0"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = run(capsys, "events", "tail", "--url", "sqlite:///x.db", *argv)
    assert (status, out) == (2, "")
    assert message in one_line(err)


async def _append(url: str, stream: UUID, name: str, expected: int) -> None:
    async with create_event_store(url, registry=contract_registry) as store:
        await store.append_events(stream, "Cart", [ItemAdded(name=name)], expected)


async def test_follow_sees_a_later_append_and_stops_on_ctrl_c(store_url: str) -> None:
    stream = uuid4()
    await asyncio.to_thread(fill, store_url, {"Cart": [2]})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventsource",
        "events",
        "tail",
        "--follow",
        "--json",
        "--lines",
        "1",
        "--url",
        store_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        async with asyncio.timeout(60):
            first = json.loads(await process.stdout.readline())
            assert first["type"] == "CartCheckedOut"
            await _append(store_url, stream, "late", 0)  # after the command started
            late = json.loads(await process.stdout.readline())
            assert (late["stream_id"], late["payload"]) == (
                str(stream),
                {"name": "late", "quantity": 1},
            )
            await _append(store_url, stream, "later", 1)
            later = json.loads(await process.stdout.readline())
            assert later["payload"]["name"] == "later"
            assert Position.parse(later["position"]) > Position.parse(late["position"])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest, errors = await process.communicate()
    assert process.returncode == 130, errors.decode()
    assert rest == b""
    assert errors == b""


@pytest.mark.postgresql
async def test_follow_rides_out_killed_sessions_without_skipping_an_event(
    postgres_url: str, schema: str
) -> None:
    """`pg_terminate_backend` on every session of a following `events tail` (its read and
    its LISTEN connection): each event appended before and after is shown exactly once."""
    import asyncpg

    name = f"es-tail-{uuid4().hex[:12]}"
    plain = f"{postgres_url}?schema={schema}"
    stream = uuid4()
    async with create_event_store(plain, registry=contract_registry) as store:
        await store.create_schema()  # type: ignore[attr-defined]
    await _append(plain, stream, "v1", 0)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "eventsource", "events", "tail", "--follow", "--json"),
        *("--from-start", "--url", f"{plain}&application_name={name}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    admin = await asyncpg.connect(postgres_url)
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            seen.append(json.loads(await process.stdout.readline())["payload"]["name"])
            killed = await admin.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                name,
            )
            assert killed >= 1
            for version in range(1, 4):
                await _append(plain, stream, f"v{version + 1}", version)
            while len(seen) < 4:
                seen.append(json.loads(await process.stdout.readline())["payload"]["name"])
    finally:
        await admin.close()
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest, errors = await process.communicate()
    assert seen == ["v1", "v2", "v3", "v4"]
    assert rest == b""  # nothing shown twice
    assert process.returncode == 130, errors.decode()
