"""`eventsource streams list|show` on SQLite and PostgreSQL: JSON checked, tables read."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from eventsource.config import create_event_store
from eventsource.testing.events import UnregisteredEvent, contract_registry
from tests.cli._cli import fill, one_line, run, run_json


def test_list_pages_and_filters(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    streams = fill(store_url, {"Cart": [1, 3, 2], "Order": [2]})
    listed = run_json(capsys, "streams", "list", "--url", store_url)
    assert [row["stream_id"] for row in listed] == sorted(str(s) for s in streams)
    assert {row["stream_id"]: row["aggregate_type"] for row in listed} == {
        str(s): kind for s, kind in streams.items()
    }
    assert sorted(row["version"] for row in listed) == [1, 2, 2, 3]
    assert all(row["last_write"] for row in listed)

    [order] = run_json(capsys, "streams", "list", "--url", store_url, "--type", "Order")
    assert order["aggregate_type"] == "Order"
    assert order["version"] == 2

    first = run_json(capsys, "streams", "list", "--url", store_url, "--limit", "2")
    rest = run_json(
        capsys, "streams", "list", "--url", store_url, "--after", first[-1]["stream_id"]
    )
    assert first + rest == listed

    status, out, err = run(capsys, "streams", "list", "--url", store_url, "--limit", "2")
    assert (status, err) == (0, "")
    assert all(row["stream_id"] in out for row in first)
    assert f"more may follow: --after {first[-1]['stream_id']}" in out


def test_show_prints_payloads_as_stored(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    [cart] = fill(store_url, {"Cart": [3]})
    events = run_json(capsys, "streams", "show", str(cart), "--url", store_url)
    assert [e["version"] for e in events] == [1, 2, 3]
    assert [e["type"] for e in events] == ["ItemAdded", "ItemAdded", "CartCheckedOut"]
    assert events[0]["payload"] == {"name": "Cart-0", "quantity": 1}
    assert events[2]["payload"] == {}
    assert all(e["stream_id"] == str(cart) and e["schema"] == 1 for e in events)
    assert all(e["occurred_at"] and e["position"] for e in events)

    later = run_json(
        capsys, "streams", "show", str(cart), "--url", store_url, "--from-version", "2"
    )
    assert later == events[1:]

    status, out, err = run(capsys, "streams", "show", str(cart), "--url", store_url)
    assert (status, err) == (0, "")
    assert '{"name": "Cart-1", "quantity": 1}' in out
    assert "CartCheckedOut" in out


def test_an_unknown_type_shows_as_stored(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    """The command has no event classes at all; a type nobody registers is no different."""
    fill(store_url, {})
    stream = uuid4()

    async def append() -> None:
        async with create_event_store(store_url, registry=contract_registry) as store:
            await store.append_events(stream, "Mystery", [UnregisteredEvent(note="hi")], 0)

    asyncio.run(append())
    [event] = run_json(capsys, "streams", "show", str(stream), "--url", store_url)
    assert (event["type"], event["payload"]) == ("UnregisteredEvent", {"note": "hi"})


def test_a_stream_without_events_is_status_1(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    fill(store_url, {})
    stream = uuid4()
    status, out, err = run(capsys, "streams", "show", str(stream), "--url", store_url)
    assert (status, out) == (1, "")
    assert one_line(err) == (
        f"eventsource streams show: AggregateNotFoundError: aggregate {stream} has no events"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["streams", "show", "not-a-uuid", "--url", "sqlite:///x.db"], "is not a stream id"),
        (["streams", "list", "--url", "sqlite:///x.db", "--limit", "0"], "at least 1"),
        (["streams", "list", "--url", "memory://"], "memory://: process memory (nothing is kept"),
        (["streams", "list", "--url", "sqlite:///:memory:"], "this command has nothing to read"),
        (["streams", "list", "--url", "nats://127.0.0.1:4222"], "cannot list its streams"),
        (["streams", "list", "--url", "ftp://x"], "unsupported scheme 'ftp'"),
        (["streams", "list"], "no store given"),
        (["streams", "rename"], "invalid choice: 'rename'"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("EVENTSOURCE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert message in one_line(err)


def test_a_missing_sqlite_file_is_status_1_and_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run(capsys, "streams", "list", "--url", f"sqlite:///{tmp_path / 'x.db'}")
    assert (status, out) == (1, "")
    assert "StoreSchemaError: no SQLite file at" in one_line(err)
    assert not (tmp_path / "x.db").exists()


@pytest.mark.postgresql
def test_postgresql_without_tables_is_status_1(
    capsys: pytest.CaptureFixture[str], postgres_url: str, schema: str
) -> None:
    status, out, err = run(capsys, "streams", "list", "--url", f"{postgres_url}?schema={schema}")
    assert (status, out) == (1, "")
    assert one_line(err).startswith("eventsource streams list: StoreSchemaError: ")


def test_python_dash_m_with_the_url_from_the_environment(store_url: str) -> None:
    streams = fill(store_url, {"Cart": [2]})
    result = subprocess.run(
        [sys.executable, "-m", "eventsource", "streams", "list", "--json"],
        env={**os.environ, "EVENTSOURCE_URL": store_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    [row] = json.loads(result.stdout)
    assert row["stream_id"] == str(next(iter(streams)))
    assert row["version"] == 2
