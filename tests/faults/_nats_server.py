"""A throw-away NATS server with JetStream for fault tests: its own port and store directory,
stopped (SIGTERM) and started again on the same directory, killed by its own process id."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests import _services

BINARY = Path("/usr/sbin/nats-server")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayNATS:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(BINARY),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.directory / "store"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        endpoint = _services.Endpoint("throw-away NATS", "127.0.0.1", self.port)
        deadline = time.monotonic() + 15
        while not _services.is_reachable(endpoint, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the throw-away NATS server did not start on {self.url}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then wait for the process to end."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, down: float = 0.0) -> None:
        """Stop the server, leave it down `down` seconds, start it again on the same store."""
        self.stop()
        time.sleep(down)
        self.start()
        self.restarts += 1
