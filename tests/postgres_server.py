"""A real PostgreSQL server for the tests: Debian's package, initialised and started in a temporary folder.

The server runs as the `postgres` user (PostgreSQL refuses root), listens on the addresses given (loopback by
default; a network namespace's bridge address for the cross-host tests) and on a Unix socket in its folder,
trusts every connection (it is reachable from nowhere else), and stops with the test process: it is started
with a parent-death signal, so a killed test run leaves no server behind. `make test` installs the package
(`make postgres`) when the machine has none.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import psycopg

PR_SET_PDEATHSIG = 1
START_TIMEOUT = 60.0


def binaries() -> Path | None:
    """The folder of the newest installed PostgreSQL's server programs, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _as_postgres(stop_with_parent: bool) -> None:
    """In the child before exec: become the postgres user and (optionally) die with the parent."""
    user = pwd.getpwnam("postgres")
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)  # before the prctl: changing credentials clears the parent-death signal
    if stop_with_parent:
        # SIGINT is PostgreSQL's fast shutdown: it ends client sessions and stops cleanly.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder; `start`, `stop` (a clean shutdown) and `kill` (SIGKILL)."""

    def __init__(self, listen: tuple[str, ...] = ("127.0.0.1",), port: int | None = None) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed: run `make postgres` (Debian's postgresql package)")
        self.bin = bin_dir
        self.listen = listen
        self.port = port or free_port(listen[0])
        self.folder = Path(tempfile.mkdtemp(prefix="lstm-pg-"))
        self.data = self.folder / "data"
        shutil.chown(self.folder, "postgres", "postgres")
        self.folder.chmod(0o700)
        self.process: subprocess.Popen[bytes] | None = None
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            preexec_fn=lambda: _as_postgres(False),
            check=True,
            capture_output=True,
            cwd=self.folder,
        )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")  # only loopback and test namespaces can reach it

    def url(self, database: str = "postgres", host: str | None = None) -> str:
        return f"postgresql://postgres@{host or self.listen[0]}:{self.port}/{database}"

    def start(self) -> None:
        with (self.folder / "server.log").open("ab") as log:
            self.process = self._spawn(log)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}") from None
                time.sleep(0.1)

    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.folder),
                "-c",
                f"listen_addresses={','.join(self.listen)}",
                "-c",
                "fsync=off",  # test data: speed over durability across a machine crash
                "-c",
                "max_connections=200",
            ],  # fmt: skip
            preexec_fn=lambda: _as_postgres(True),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )

    def log_tail(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
