"""The process harness shared by the end-to-end tests and the benchmarks: ports, process queries, real servers.

Free ports; psutil queries (children, workers, CPU, RSS, state, processes by command line); a real server
process started, waited for and stopped (`start_lstm_serve`, `running`).

Everything here reads other processes through psutil, never /proc by hand. A pid that has exited (or was never
there) answers as "gone": no children, no CPU, no match, so callers can poll without catching races.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

HOST = "127.0.0.1"  # every server the tests and benchmarks start binds loopback only
READY_TIMEOUT_S = 180.0  # importing torch and loading models on a busy machine can take a minute or more


def free_port() -> int:
    """A TCP port on HOST that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# ---- process queries -------------------------------------------------------------------------------------


def state(pid: int) -> str | None:
    """psutil's status of the process ("running", "sleeping", "zombie", ...); None if there is no such process."""
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return None
    return status


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody has collected yet counts: it runs nothing and holds no socket)."""
    return state(pid) in (None, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def parent(pid: int) -> int | None:
    """The parent's pid; None if there is no such process."""
    try:
        return psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None


def children(pid: int) -> list[int]:
    """The live direct children of `pid`, sorted (zombies left out)."""
    try:
        found = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    return sorted(child.pid for child in found if not gone(child.pid))


def cmdline(pid: int) -> list[str]:
    """The process's arguments; [] if it is gone or a zombie."""
    try:
        args: list[str] = psutil.Process(pid).cmdline()
    except psutil.Error:
        return []
    return args


def spawned_workers(pid: int) -> list[int]:
    """The live children of `pid` that multiprocessing spawned (uvicorn's and lstm-serve's workers)."""
    return [child for child in children(pid) if any("spawn_main" in arg for arg in cmdline(child))]


def find_processes(*args: str, substring: bool = False) -> list[int]:
    """Pids whose command line has every one of `args` as an argument (substring=True: inside any argument)."""
    found = []
    for process in psutil.process_iter():
        command = cmdline(process.pid)
        if substring:
            hit = all(any(arg in part for part in command) for arg in args)
        else:
            hit = all(arg in command for arg in args)
        if command and hit:
            found.append(process.pid)
    return sorted(found)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes (all their threads), in seconds; gone processes count 0."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def rss_mib(pid: int) -> float:
    """Resident set size (VmRSS) of the process, MiB."""
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def thread_count(pid: int) -> int:
    return int(psutil.Process(pid).num_threads())


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


# ---- a server process ------------------------------------------------------------------------------------


@dataclass
class ServeProcess:
    """A server process started by `start`: where it listens, its Popen, its log, and when it became ready."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.perf_counter)  # perf_counter at Popen
    ready_s: float = float("nan")  # Popen -> first 200 on the probe

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> list[int]:
        """The processes that serve: the spawned workers, or the main process when it serves alone."""
        return spawned_workers(self.pid) or [self.pid]

    def tree(self) -> list[int]:
        """The main process and its live children."""
        return [self.pid, *children(self.pid)]

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.log.stem}: exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")


def lstm_serve_command(
    store: Path, port: int, workers: int = 1, args: Sequence[str] = (), python: str = sys.executable
) -> list[str]:
    """`lstm-serve` as `python -m service`, so the interpreter (and so its site-packages and PYTHONPATH) is chosen."""
    command = [python, "-m", "service", "--store", str(store), "--host", HOST, "--port", str(port)]
    return [*command, "--workers", str(workers), *args]


def start(
    command: Sequence[str],
    port: int,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    probe: str = "/readyz",
    timeout: float = READY_TIMEOUT_S,
    new_session: bool = False,
) -> ServeProcess:
    """Start `command` (its output to `log`) and wait until GET `probe` answers 200; kill it if it never does.

    new_session=True puts it in a session of its own, so `stop` can SIGKILL its whole group if it hangs.
    """
    with open(log, "wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ if env is None else env),
            cwd=cwd,
            start_new_session=new_session,
        )
    server = ServeProcess(url=f"http://{HOST}:{port}", port=port, process=process, log=log, started=started)
    deadline = started + timeout
    try:
        while True:
            server.check_alive()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}{probe}", timeout=1).status_code == 200:
                    server.ready_s = time.perf_counter() - started
                    return server
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{log.stem}: not ready after {timeout:g} s:\n{server.log_text()[-3000:]}")
            time.sleep(0.02)
    except BaseException:
        stop(server, timeout=10)
        raise


def start_lstm_serve(
    store: Path,
    log: Path,
    *,
    workers: int = 1,
    port: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    cwd: Path | None = None,
    timeout: float = READY_TIMEOUT_S,
    new_session: bool = False,
) -> ServeProcess:
    """A real lstm-serve on `store`, ready (GET /readyz answered 200). `env` defaults to this process's.

    Its gRPC server listens on a port of the system's choosing (LSTM_GRPC_PORT=0) unless `env` or `args` say
    otherwise, so that servers started at once never collide on the default 8001."""
    port = free_port() if port is None else port
    env = {"LSTM_GRPC_PORT": "0", **(os.environ if env is None else env)}
    command = lstm_serve_command(store, port, workers, args, python)
    return start(command, port, log, env=env, cwd=cwd, timeout=timeout, new_session=new_session)


def stop(server: ServeProcess, timeout: float = 120.0) -> int:
    """SIGTERM (lstm-serve drains), then SIGKILL after `timeout`; reaps the process and returns its exit status."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(process.pid) == process.pid:  # its own session: only what we started
                    os.killpg(process.pid, signal.SIGKILL)
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def running(server: ServeProcess) -> Iterator[ServeProcess]:
    """A started server (`start`, `start_lstm_serve`) for the block; stopped and reaped after it, however it ends.

    with harness.running(harness.start_lstm_serve(store, log, env=env)) as server: ...
    """
    try:
        yield server
    finally:
        stop(server)
