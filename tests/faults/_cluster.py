"""A throw-away PostgreSQL cluster that a fault test may stop, crash and restart.

The shared server on 5432 is never touched: `ThrowawayCluster` runs `initdb` into a temporary
directory and starts its own postmaster on a free loopback port, as the `postgres` OS user
(PostgreSQL refuses to run as root). `remove()` stops it and deletes the directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"

StopMode = Literal["smart", "fast", "immediate"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ClusterError(RuntimeError):
    """initdb or pg_ctl failed; the message carries their output."""


class ThrowawayCluster:
    """`initdb` + `pg_ctl` in a temporary directory, listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="es-faults-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self.running = False
        self._user = pwd.getpwnam(OS_USER) if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> str:
        uid = gid = None
        if self._user is not None:
            uid, gid = self._user.pw_uid, self._user.pw_gid
        done = subprocess.run(
            [str(a) for a in args],
            capture_output=True,
            text=True,
            cwd=self.directory,
            check=False,
            timeout=60,
            user=uid,
            group=gid,
            extra_groups=None if uid is None else [],
        )
        if done.returncode != 0:
            raise ClusterError(
                f"{' '.join(args[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}"
                f"{self._log_tail()}"
            )
        return str(done.stdout)

    def _log_tail(self) -> str:
        try:
            return "\n--- server log ---\n" + self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def create(self) -> None:
        if self._user is not None:
            os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)
        self._run(
            str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "start")  # fmt: skip
        self.running = True

    def stop(self, mode: StopMode = "fast") -> None:
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (`fast`: roll back and disconnect; `immediate`: a crash, recovery on start)
        and start again on the same port."""
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
