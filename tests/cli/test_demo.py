"""`eventsource demo` end to end: what it prints, what it stores, how it fails.

`main()` runs its own event loop (`asyncio.run`), so these tests are sync and check the store
afterwards with a loop of their own.
"""

import asyncio
import io
import re
import subprocess
import sys
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path
from uuid import UUID, uuid4

import pytest

import eventsource
from eventsource import AggregateRepository, ReadOptions, SQLiteEventStore
from eventsource.cli import main
from eventsource.cli.bank import DEMO_REGISTRY, Account
from eventsource.cli.demo import BURST

EVENTS_PER_RUN = 28  # 2 opened, 1 + 2 + 20 deposits, 2 withdrawals, 1 closed


def run_demo(capsys: pytest.CaptureFixture[str], url: str) -> str:
    status = main(["demo", "--url", url])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    return out


def stored_demo_events(path: Path) -> int:
    async def count() -> int:
        async with SQLiteEventStore(path, registry=DEMO_REGISTRY) as store:
            return len([e async for e in store.read_all(ReadOptions())])

    return asyncio.run(count())


def load_account(path: Path, account_id: UUID) -> Account:
    async def load() -> Account:
        async with SQLiteEventStore(path, registry=DEMO_REGISTRY) as store:
            return await AggregateRepository(store, Account).load(account_id)

    return asyncio.run(load())


def read_model_lines(out: str) -> list[tuple[str, str]]:
    """(position, accounts) of each "read model at ..." line, without the burst's counts."""
    return [
        (position, re.sub(r" \(\d+ applied .*\)$", "", shown))
        for position, shown in re.findall(r"^    read model at (\S+): (.*)$", out, re.M)
    ]


def bob_id(out: str) -> UUID:
    match = re.search(r"Bob's history \(stream ([0-9a-f-]{36})\)", out)
    assert match, out
    return UUID(match[1])


def test_demo_on_a_sqlite_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = run_demo(capsys, f"sqlite:///{tmp_path}/d.db")

    assert f"store: SQLite file {tmp_path / 'd.db'}\n" in out
    # 100 - 30 + 20 x 5.00; Bob: 20 + 30 - 50, then closed.
    assert re.search(r"^  Alice  [0-9a-f]{8}   170\.00  open    version 23$", out, re.M)
    assert re.search(r"^  Bob    [0-9a-f]{8}     0\.00  closed  version 5$", out, re.M)
    assert "refused (InsufficientFunds): cannot withdraw 200.00: only 100.00 available" in out
    assert "refused (AccountClosedError): the account is closed" in out
    assert f"all {BURST} saved;" in out

    history = re.findall(r"^  v(\d+)  (\w+)", out, re.M)
    assert history == [
        ("1", "AccountOpened"),
        ("2", "MoneyDeposited"),
        ("3", "MoneyDeposited"),
        ("4", "MoneyWithdrawn"),
        ("5", "AccountClosed"),
    ]
    assert "  v1  AccountOpened   owner=Bob overdraft_limit=50.00\n" in out

    assert "read_all from the start" in out
    assert f"this run appended {EVENTS_PER_RUN} events, positions 0-1 to 0-28" in out
    assert "AccountOpened 2, MoneyDeposited 23, MoneyWithdrawn 2, AccountClosed 1" in out
    assert f"the store now holds {EVENTS_PER_RUN} demo events" in out
    assert len(out.splitlines()) <= 40

    # The read model fed by the subscription, shown at each step's last position; positions
    # are explained before the first one is printed.
    assert "subscription started on an empty feed, now live" in out
    assert out.index("a position like 0-7 is") < out.index("0-2")
    assert read_model_lines(out) == [
        ("0-2", "Alice 100.00"),
        ("0-4", "Alice 100.00, Bob 20.00"),
        ("0-6", "Alice 70.00, Bob 50.00"),
        ("0-26", "Alice 170.00, Bob 50.00"),
        ("0-28", "Alice 170.00, Bob 0.00 closed"),
    ]
    during = re.search(r"\((\d+) applied while the deposits ran, (\d+) after\)", out)
    assert during, out
    assert int(during[1]) + int(during[2]) == BURST
    assert "the read model, fed by the subscription, shows the same" in out

    # What it printed is what it stored.
    assert stored_demo_events(tmp_path / "d.db") == EVENTS_PER_RUN
    bob = load_account(tmp_path / "d.db", bob_id(out))
    assert (bob.state.balance, bob.state.closed, bob.version) == (Decimal(0), True, 5)


def test_running_twice_on_one_file_adds_a_second_set_of_accounts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/d.db"
    first = run_demo(capsys, url)
    second = run_demo(capsys, url)

    assert f"({EVENTS_PER_RUN} demo events from earlier runs)" in second
    # The read model lives in memory: the second run's subscription catches up from the start.
    assert f"subscription caught up on the {EVENTS_PER_RUN} earlier events (to 0-28)" in second
    assert [position for position, _ in read_model_lines(second)] == [
        "0-30",
        "0-32",
        "0-34",
        "0-54",
        "0-56",
    ]
    assert "the read model, fed by the subscription, shows the same" in second
    assert "read_all after position 0-28" in second
    assert f"this run appended {EVENTS_PER_RUN} events, positions 0-29 to 0-56" in second
    assert f"the store now holds {2 * EVENTS_PER_RUN} demo events" in second
    assert bob_id(first) != bob_id(second)
    assert stored_demo_events(tmp_path / "d.db") == 2 * EVENTS_PER_RUN


def test_default_url_is_a_file_in_the_current_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    assert f"SQLite file {tmp_path / 'eventsource-demo.db'}" in capsys.readouterr().out
    assert stored_demo_events(tmp_path / "eventsource-demo.db") == EVENTS_PER_RUN


@pytest.mark.parametrize("url", ["memory://", "sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"])
def test_stores_that_keep_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    out = run_demo(capsys, url)
    assert "nothing is kept after exit" in out
    assert re.search(r"Alice  [0-9a-f]{8}   170\.00", out)
    assert "the read model, fed by the subscription, shows the same" in out
    assert "Run the demo again" not in out
    assert list(tmp_path.iterdir()) == []


def test_concurrent_deposits_conflict_and_are_retried(capsys: pytest.CaptureFixture[str]) -> None:
    # In memory every deposit loads the account before any saves, so all but one conflict.
    out = run_demo(capsys, "memory://")
    match = re.search(rf"all {BURST} saved; (\d+) times a deposit found the account changed", out)
    assert match, out
    assert int(match[1]) >= BURST - 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://localhost/events?schema=a&schema=b", "give the schema once"),
        ("mysql://localhost/events", "unsupported scheme 'mysql'"),
        ("redis://localhost", "unsupported scheme 'redis'"),
        ("events.db", "is not a store URL"),
        ("sqlite://", "names a file after three slashes"),
        ("sqlite:///d.db?mode=ro", "no query options"),
        ("memory://somewhere", "takes no path"),
    ],
)
def test_unusable_url_exits_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--url", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"eventsource demo: {url!r}")
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_missing_sqlite_driver_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import eventsource.stores.sqlite

    def no_driver(module: str, *, extra: str, feature: str) -> None:
        raise ImportError(f"{feature} needs {module!r}: pip install 'eventsource-async[{extra}]'")

    monkeypatch.setattr(eventsource.stores.sqlite, "require", no_driver)
    assert main(["demo", "--url", "sqlite:///d.db"]) == 2
    err = capsys.readouterr().err
    assert "eventsource-async[sqlite]" in err
    assert "memory://" in err


def test_store_that_cannot_open_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["demo", "--url", f"sqlite:///{tmp_path}/missing-dir/d.db"]) == 1
    err = capsys.readouterr().err
    assert "EventStoreError: cannot open SQLite store" in err
    assert "missing-dir" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"eventsource {eventsource.__version__}\n"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "eventsource demo" in capsys.readouterr().err


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_closed_output_pipe_stops_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["demo", "--url", "memory://"]) == 1


def test_console_script_points_at_main() -> None:
    (script,) = entry_points(group="console_scripts", name="eventsource")
    assert script.load() is main


def test_python_dash_m_runs_the_demo(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventsource", "demo", "--url", "memory://"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Balances, rebuilt from the stored events:" in result.stdout
    assert result.stderr == ""


@pytest.mark.postgresql
def test_demo_on_postgresql_in_its_own_schema(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    import asyncpg

    schema = f"es_demo_{uuid4().hex[:10]}"
    url = f"{postgres_url}?schema={schema}"
    try:
        first = run_demo(capsys, url)
        assert f"store: PostgreSQL 127.0.0.1:5432/test, schema '{schema}'\n" in first
        assert re.search(r"Alice  [0-9a-f]{8}   170\.00", first)
        assert f"or drop the schema '{schema}' to start over" in first
        second = run_demo(capsys, url)
        assert f"({EVENTS_PER_RUN} demo events from earlier runs)" in second
        assert f"subscription caught up on the {EVENTS_PER_RUN} earlier events" in second
        assert "the read model, fed by the subscription, shows the same" in second
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect(postgres_url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())


def test_demo_reports_an_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["demo", "--url", "postgresql://postgres@127.0.0.1:1/test?schema=nowhere"])
    _, err = capsys.readouterr()
    assert status == 1
    assert "StoreConnectionError" in err
