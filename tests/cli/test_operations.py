"""The operations commands end to end (`subscriptions`, `projections`, `dlq`, `outbox`,
`bench`), through `eventsource.cli.main` on real SQLite files and PostgreSQL schemas, their
`--json` output parsed. `main` runs its own event loop, so async tests call it in a thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from eventsource import InMemoryEventBus, Position, SubscriptionManager
from eventsource.cli import main
from eventsource.config import (
    create_dlq_repository,
    create_event_store,
    create_outbox_repository,
    parse_database_url,
)
from eventsource.outbox import OutboxRelay
from tests.cli import _ops_app as app
from tests.cli._ops_app import OpsTicked

APP = "tests.cli._ops_app"


@dataclass
class Run:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    status = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return Run(status, out, err)


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ]
)
async def url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """A store URL with the outbox on (also in `$EVENTSOURCE_URL`); the app reset."""
    app.FAILING.clear()
    await app.projection.reset()
    if request.param == "sqlite":
        monkeypatch.setenv("EVENTSOURCE_URL", f"sqlite:///{tmp_path / 'ops.db'}?outbox=true")
        yield os.environ["EVENTSOURCE_URL"]
        return
    postgres_url = request.getfixturevalue("postgres_url")
    schema = f"es_cli_{uuid4().hex[:12]}"
    address = f"{postgres_url}?schema={schema}&outbox=true"
    async with create_event_store(address) as store:
        await store.create_schema()  # type: ignore[attr-defined]
    monkeypatch.setenv("EVENTSOURCE_URL", address)
    try:
        yield address
    finally:
        await _drop(postgres_url, schema)


async def _drop(postgres_url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _close(manager: SubscriptionManager) -> None:
    for part in (manager.event_store, manager.checkpoints, manager.dead_letters):
        await part.close()  # type: ignore[union-attr]


@dataclass
class Seeded:
    handled_up_to: Position
    first: UUID
    second: UUID


async def seed(*, poison: bool) -> Seeded:
    """Stream `first` (a1, poison, a3) handled by the app's subscription (poison
    dead-lettered when `poison`), then stream `second` (b1, b2) appended and not handled."""
    if poison:
        app.FAILING.add("poison")
    manager = await app.manager()
    store = manager.event_store
    first, second = uuid4(), uuid4()
    ticks = [OpsTicked(label=label) for label in ("a1", "poison", "a3")]
    await store.append_events(first, "Ticker", ticks, 0)
    try:
        async with manager:
            head = await store.current_position()
            await manager["tick-counts"].wait_for(head, timeout=30)
        await store.append_events(second, "Ticker", [OpsTicked(label=x) for x in ("b1", "b2")], 0)
    finally:
        await _close(manager)
    return Seeded(head, first, second)


async def test_status_shows_a_partway_subscription(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seeded = await seed(poison=True)
    run = await cli(capsys, "subscriptions", "status", "--json")
    assert run.status == 0, run.err
    (row,) = run.json()
    assert row["name"] == "tick-counts"
    assert row["position"] == str(seeded.handled_up_to)
    assert (row["handled"], row["behind"], row["dead_letters"]) == (3, 2, 1)
    assert 0 <= row["lag_seconds"] < 3600
    assert row["state"] == "failing"
    assert "RuntimeError: cannot count poison" in row["last_error"]
    assert row["owner"] is None

    (letter,) = (await cli(capsys, "dlq", "list", "--json")).json()
    assert (await cli(capsys, "dlq", "resolve", letter["id"])).status == 0
    run = await cli(capsys, "subscriptions", "status", "tick-counts", "--json")
    assert run.status == 0, run.err
    record = run.json()
    assert (record["state"], record["behind"], record["dead_letters"]) == ("behind", 2, 0)

    table = await cli(capsys, "subscriptions", "status", "--url", url)
    assert table.status == 0, table.err
    assert "tick-counts" in table.out
    assert "behind" in table.out


@pytest.mark.postgresql
async def test_status_names_the_lease_holder_and_rebuild_refuses_to_race_it(
    postgres_url: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from eventsource.subscriptions.postgresql import PostgreSQLLeases

    address = f"{postgres_url}?schema={schema}"
    async with create_event_store(address) as store:
        await store.create_schema()  # type: ignore[attr-defined]
        await store.append_events(uuid4(), "Ticker", [OpsTicked(label="x")], 0)
        dlq = create_dlq_repository(address)
        (stored,) = [s async for s in store.read_all()]
        await dlq.add("tick-counts", stored, RuntimeError("held"), 1)
        await dlq.close()
        lease = await PostgreSQLLeases.for_store(store).try_acquire("tick-counts")
        assert lease is not None
        try:
            run = await cli(
                capsys, "subscriptions", "status", "tick-counts", "--url", address, "--json"
            )
            assert run.status == 0, run.err
            assert run.json()["owner"].startswith("pid ")
            rebuild = await cli(
                capsys,
                "projections",
                "rebuild",
                "tick-counts",
                "--app",
                f"{APP}:projection",
                "--url",
                address,
            )
            assert rebuild.status == 2
            assert "is running" in rebuild.err
            assert len(rebuild.err.splitlines()) == 1
        finally:
            await lease.release()
        run = await cli(
            capsys, "subscriptions", "status", "tick-counts", "--url", address, "--json"
        )
        assert run.json()["owner"] is None


async def test_a_dead_letter_is_listed_shown_and_retried_until_handled(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seeded = await seed(poison=True)
    run = await cli(capsys, "dlq", "list", "--json")
    assert run.status == 0, run.err
    (letter,) = run.json()
    assert (letter["subscription"], letter["event_type"], letter["status"]) == (
        "tick-counts",
        "OpsTicked",
        "failed",
    )
    shown = (await cli(capsys, "dlq", "show", letter["id"], "--json")).json()
    assert json.loads(shown["payload"])["label"] == "poison"
    assert shown["aggregate_id"] == str(seeded.first)
    assert "RuntimeError: cannot count poison" in shown["traceback"]

    failed = await cli(capsys, "dlq", "retry", letter["id"], "--app", f"{APP}:manager", "--json")
    assert failed.status == 1
    (outcome,) = failed.json()
    assert outcome["outcome"] == "failed again"
    assert "cannot count poison" in outcome["error"]
    assert (await cli(capsys, "dlq", "show", letter["id"], "--json")).json()["attempts"] == 2

    app.FAILING.clear()
    retried = await cli(capsys, "dlq", "retry", letter["id"], "--app", f"{APP}:manager", "--json")
    assert retried.status == 0, retried.err
    assert retried.json()[0]["outcome"] == "resolved"
    assert "poison" in app.projection.labels  # the handler ran on it
    after = (await cli(capsys, "dlq", "show", letter["id"], "--json")).json()
    assert (after["status"], after["resolved_by"]) == ("resolved", "retry")
    assert (await cli(capsys, "dlq", "list", "--json")).json() == []
    again = await cli(capsys, "dlq", "retry", letter["id"], "--app", f"{APP}:manager", "--json")
    assert again.status == 1
    assert again.json()[0]["outcome"] == "not retried"


async def test_dead_letters_are_resolved_and_discarded(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seeded = await seed(poison=False)
    store = create_event_store(url)
    dlq = create_dlq_repository(url)
    try:
        ids = []
        async for stored in store.read_stream(seeded.second):
            letter = await dlq.add("tick-counts", stored, ValueError(stored.event_type), 1)
            ids.append(str(letter.id))
    finally:
        await dlq.close()
        await store.close()
    resolved = await cli(capsys, "dlq", "resolve", ids[0], "--by", "alice", "--json")
    assert resolved.status == 0, resolved.err
    assert resolved.json() == [{"id": ids[0], "subscription": "tick-counts", "outcome": "resolved"}]
    discarded = await cli(capsys, "dlq", "discard", ids[1], "--by", "bob", "--json")
    assert discarded.status == 0, discarded.err
    listed = (await cli(capsys, "dlq", "list", "--status", "resolved", "--json")).json()
    assert {row["id"] for row in listed} == set(ids)
    by = {i: (await cli(capsys, "dlq", "show", i, "--json")).json()["resolved_by"] for i in ids}
    assert by == {ids[0]: "alice", ids[1]: "discarded by bob"}
    twice = await cli(capsys, "dlq", "resolve", ids[0], "--json")
    assert twice.status == 1
    assert twice.json()[0]["outcome"] == "already resolved"
    unknown = await cli(capsys, "dlq", "discard", str(uuid4()))
    assert unknown.status == 2
    assert "no dead letter" in unknown.err


async def test_a_parked_outbox_row_is_retried_and_relayed(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = create_event_store(url)
    outbox = create_outbox_repository(url)
    try:
        stream = uuid4()
        await store.append_events(stream, "Ticker", [OpsTicked(label=x) for x in "abc"], 0)
        async with outbox.claim(1) as batch:
            await batch.parked(batch.entries, "broker said no")
            (parked_id,) = [entry.id for entry in batch.entries]
        status = await cli(capsys, "outbox", "status", "--json")
        assert status.status == 0, status.err
        report = status.json()
        assert (report["pending"], report["parked"], report["published"]) == (2, 1, 0)
        assert (report["leased_rows"], report["relays_publishing"]) == (0, 0)
        assert report["oldest_pending_age_seconds"] >= 0
        (row,) = report["parked_rows"]
        assert (row["id"], row["last_error"], row["attempts"]) == (parked_id, "broker said no", 1)

        bus = InMemoryEventBus()
        relay = OutboxRelay(outbox, bus)
        assert await relay.publish_pending() == 0  # the parked row holds its stream back

        retried = await cli(capsys, "outbox", "retry", str(parked_id), "--json")
        assert retried.status == 0, retried.err
        assert retried.json() == [{"id": parked_id, "outcome": "retried"}]
        assert await relay.publish_pending() == 3
        report = (await cli(capsys, "outbox", "status", "--json")).json()
        assert (report["pending"], report["parked"], report["published"]) == (0, 0, 3)
        again = await cli(capsys, "outbox", "retry", str(parked_id), "--json")
        assert again.status == 1
        assert again.json() == [{"id": parked_id, "outcome": "not parked"}]
        people = await cli(capsys, "outbox", "status")
        assert "Published" in people.out
    finally:
        await outbox.close()
        await store.close()


@pytest.mark.parametrize("target", ["projection", "manager"])
async def test_rebuild_replays_a_read_model(
    url: str, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(poison=False)
    assert app.projection.labels == ["a1", "poison", "a3"]
    app.projection.labels[:] = ["damaged"]
    run = await cli(
        capsys, "projections", "rebuild", "tick-counts", "--app", f"{APP}:{target}", "--json"
    )
    assert run.status == 0, run.err
    report = run.json()
    assert (report["name"], report["events"], report["total"], report["percent"]) == (
        "tick-counts",
        5,
        5,
        100.0,
    )
    assert app.projection.labels == ["a1", "poison", "a3", "b1", "b2"]
    assert "rebuilding tick-counts: 5/5 events (100.0%)" in run.err  # the plain progress line
    (row,) = (await cli(capsys, "subscriptions", "status", "--json")).json()
    assert (row["state"], row["handled"], row["behind"]) == ("caught up", 5, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["subscriptions", "status"], "no store given"),
        (["subscriptions", "status", "ghost"], "no subscription 'ghost'"),
        (["projections", "rebuild", "x", "--app", "no_such_module_xyz:app"], "cannot import"),
        (["projections", "rebuild", "x", "--app", f"{APP}:not_an_app"], "is a int"),
        (["projections", "rebuild", "x", "--app", f"{APP}:missing"], "has no attribute"),
        (["projections", "rebuild", "x", "--app", APP], "expected MODULE:ATTR"),
        (["projections", "rebuild", "nope", "--app", f"{APP}:projection"], "runs no subscription"),
        (["dlq", "show", str(UUID(int=7))], "no dead letter"),
        (["outbox", "retry"], "name the parked rows"),
        (["bench", "--quick", "--url", "nats://127.0.0.1:4222"], "PostgreSQL, SQLite and memory"),
    ],
)
@pytest.mark.sqlite
def test_bad_input_is_one_line_and_status_2(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if argv != ["subscriptions", "status"]:
        monkeypatch.setenv("EVENTSOURCE_URL", f"sqlite:///{tmp_path / 'bad.db'}")
    else:
        monkeypatch.delenv("EVENTSOURCE_URL", raising=False)
    status = main(argv)
    _out, err = capsys.readouterr()
    assert status == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "show", "not-a-uuid"],
        ["dlq", "retry", str(UUID(int=1))],
        ["dlq", "list", "--limit", "0"],
    ],
)
def test_usage_errors_are_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"eventsource dlq {argv[1]}: ")
    assert "--help" in err


_OURS = re.compile(r"^eventsource_bench_[0-9a-f]{12}$")


async def _bench_schemas(postgres_url: str) -> set[str]:
    import asyncpg

    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch("SELECT nspname FROM pg_namespace")
    finally:
        await conn.close()
    return {row[0] for row in rows if _OURS.match(row[0])}


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ],
)
async def test_bench_measures_and_leaves_nothing_behind(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind == "sqlite":
        (tmp_path / "app").mkdir()
        address = f"sqlite:///{tmp_path / 'app' / 'events.db'}"
    else:
        address = request.getfixturevalue("postgres_url")
        before = await _bench_schemas(address)
    run = await cli(capsys, "bench", "--quick", "--url", address, "--json")
    assert run.status == 0, run.err
    rows = run.json()
    assert [row["workload"] for row in rows] == [
        "append 1 event",
        "append 100 events",
        "read a stream",
        "read the feed",
        "command loop",
    ]
    for row in rows:
        assert row["operations"] > 0
        assert row["events"] >= row["operations"]
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["events_per_second"] > 0
    if kind == "sqlite":
        assert list((tmp_path / "app").iterdir()) == []  # its scratch file is gone
    else:
        assert await _bench_schemas(address) == before
    assert parse_database_url(address).backend == kind


@pytest.mark.sqlite
def test_rebuild_draws_a_progress_bar_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pty
    import subprocess
    import sys

    address = f"sqlite:///{tmp_path / 'tty.db'}"
    monkeypatch.setenv("EVENTSOURCE_URL", address)
    app.FAILING.clear()
    asyncio.run(seed(poison=False))
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from eventsource.cli import main; sys.exit(main())",
            *("projections", "rebuild", "tick-counts", "--app", f"{APP}:projection"),
        ],
        stdout=subprocess.PIPE,
        stderr=terminal,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "TERM": "xterm", "COLUMNS": "150"},
    )
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal's last writer exited
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0, drawn.decode(errors="replace")
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode())
    assert "rebuilding tick-counts ━" in screen  # rich's bar, not the plain line
    assert "tick-counts:" not in screen
    assert "5/5" in screen
    assert "100.0%" in screen
    assert "events/s" in screen
    assert "ETA 00:00:00" in screen
    assert "rebuilt tick-counts" in stdout.decode()
