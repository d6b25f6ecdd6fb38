"""`eventsource serve` as a user runs it: a process serving a store until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from eventsource import AuthenticationError, GrpcEventStore
from eventsource.cli import main
from eventsource.testing.events import ItemAdded, contract_registry

pytestmark = pytest.mark.grpc

TENANT = uuid4()


async def test_serve_until_sigterm(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# token tenant\nsecret-a {TENANT}\nsecret-admin *\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from eventsource.cli import main; sys.exit(main())",
        "serve",
        "--url",
        f"sqlite:///{tmp_path / 'events.db'}",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        str(tokens),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(60):
            banner = (await process.stderr.readline()).decode()
        assert "serving" in banner, banner
        port = int(banner.split(" on 127.0.0.1:")[1].split(" ")[0])
        target = f"127.0.0.1:{port}"
        async with GrpcEventStore(target, registry=contract_registry, token="secret-a") as a:
            result = await a.append_events(uuid4(), "Cart", [ItemAdded(name="served")], 0)
            assert result.events[0].tenant_id == TENANT
            assert [s.event.name async for s in a.read_all()] == ["served"]  # type: ignore[attr-defined]
        async with GrpcEventStore(target, registry=contract_registry, token="nope") as stranger:
            with pytest.raises(AuthenticationError):
                await stranger.count_events()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = (await process.stderr.read()).decode()
            status = await process.wait()
    assert status == 0, rest
    assert "stopped" in rest


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "one of the arguments --token --token-file --no-auth is required"),
        (["--token", "abc"], "needs TOKEN and TENANT"),
        (["--token", "abc=x", "--token", "abc=y"], "the same token is given twice"),
        (["--no-auth", "--tls-cert", "x.pem"], "both --tls-cert and --tls-key"),
    ],
)
def test_bad_options_exit_2(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--url", "memory://", *arguments]) == 2
    assert message in capsys.readouterr().err
