"""The supervisor of lstm-serve --workers N: holds the address, runs the workers and the job runner.

It restarts those that die, drains them on SIGTERM, and takes them with it when it dies, however it dies.

Why our own: uvicorn's Multiprocess shares one listening socket between its workers, which lets one
worker take every connection opened at once (service/sockets.py); a socket per worker was only to be had
by patching a uvicorn internal; and its workers outlived a supervisor killed with SIGKILL (parent 1, still
holding the port and answering, so a restart failed with "Address already in use").

What it owns:
- the address: reserved before any worker starts (a taken port stops lstm-serve with exit 1) and held
  for the life of the supervisor (service/sockets.py);
- the workers: spawned from its main thread (multiprocessing, spawn). Each sets PR_SET_PDEATHSIG=SIGKILL
  first thing and then checks that its parent is still this supervisor (it may have died before), so no
  worker outlives it; each binds its own SO_REUSEPORT socket and runs uvicorn.Server on it
  (service/http_server.py), and says once over a pipe when it accepts connections;
- restarts: a worker that dies is started again after a backoff (0.5 s, doubling up to 30 s while its
  successors keep dying within 30 s), and the log says so; never during shutdown. A worker that fails
  before it was ever ready stops lstm-serve with its status: retrying does not cure a start-up error;
- shutdown: SIGTERM or SIGINT is forwarded to every worker as SIGTERM; they drain for up to
  LSTM_DRAIN_TIMEOUT; any still running 5 s after that is killed; a clean stop exits 0;
- the job runner: one more child, `python -m service.lstm_worker` (lstm-worker), runs every training job of
  this lstm-serve (the workers run none). It too dies with the supervisor (PR_SET_PDEATHSIG, set between fork
  and exec), is restarted with the same backoff when it dies, and gets SIGTERM at shutdown: it kills its
  training processes and marks their jobs failed. It has no ready signal: a runner that fails restarts,
  it never stops lstm-serve;
- orphans: it is a child subreaper, so the training processes of a runner that died are reparented to it
  (they exit with their parent) and it reaps them, also as PID 1 in a container where nobody else would.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any, Protocol

from service.config import Settings
from service.http_server import STARTUP_FAILURE, serve
from service.logs import configure
from service.peers import Peers
from service.sockets import worker_socket

log = logging.getLogger("service.supervisor")

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36
KILL_MARGIN = 5.0  # seconds past the drain timeout before a worker that still runs is killed
FIRST_BACKOFF = 0.5  # seconds before the first restart of a slot
MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0  # a worker that lived this long resets its slot's backoff
TICK = 1.0  # longest wait between two looks at the workers (and at orphans to reap)
READY = b"ready"


def _prctl(option: int, value: int) -> bool:
    """prctl(2) through libc; False where there is none (not Linux) or it failed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def die_with(parent: int) -> None:
    """Make this process die when `parent` does: SIGKILL from the kernel on Linux, else a watching thread."""
    if not _prctl(PR_SET_PDEATHSIG, signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # it died before prctl: we were reparented already and no signal will come
        os._exit(1)


class Child(Protocol):
    """A supervised process: a multiprocessing worker, or a CommandProcess."""

    @property
    def name(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def sentinel(self) -> int | None: ...
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...
    def join(self) -> None: ...
    def kill(self) -> None: ...


class CommandProcess:
    """A child that runs a command (the job runner), with what the supervisor uses of a multiprocessing worker."""

    def __init__(self, command: list[str], name: str, supervisor: int, stdin: bytes = b"") -> None:
        self.name = name
        prctl = _libc_prctl()  # bound before the fork: the child only calls it

        def die_with_supervisor() -> None:  # between fork and exec: two system calls, nothing that may lock
            if prctl is not None:
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != supervisor:  # it died before prctl: no signal will come
                os._exit(1)

        # Its settings come on stdin alone: pydantic-settings would fill a field missing there from an LSTM_ variable.
        environment = {key: value for key, value in os.environ.items() if not key.startswith("LSTM_")}
        self._popen = subprocess.Popen(command, stdin=subprocess.PIPE, env=environment, preexec_fn=die_with_supervisor)
        self.pid: int | None = self._popen.pid
        assert self._popen.stdin is not None
        with contextlib.suppress(BrokenPipeError), self._popen.stdin:  # it may die before it reads: the restart logs it
            self._popen.stdin.write(stdin)
        self.sentinel: int | None = None  # a pidfd, readable once the child has exited; else the TICK notices
        with contextlib.suppress(AttributeError, OSError):
            self.sentinel = os.pidfd_open(self._popen.pid)

    @property
    def exitcode(self) -> int | None:
        return self._popen.returncode

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self) -> None:
        self._popen.wait()
        if self.sentinel is not None:
            os.close(self.sentinel)
            self.sentinel = None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._popen.kill()


def _libc_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def runner_command() -> list[str]:
    """The job-runner process of lstm-serve --workers N: lstm-worker, reading the resolved settings from stdin."""
    return [sys.executable, "-m", "service.lstm_worker", "--settings-on-stdin"]


def runner_settings(settings: Settings) -> bytes:
    """What the job runner reads on stdin: lstm-serve's resolved settings as JSON, its own runner on.

    On stdin, not the command line (every user sees that in ps) nor copied into LSTM_ variables; without the
    token, which a runner never needs (pydantic writes a SecretStr as stars)."""
    return settings.model_copy(update={"job_runner": True}).model_dump_json(exclude={"api_token"}).encode()


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs; multiprocessing's spawn pickles it to the new process."""

    host: str
    port: int
    supervisor: int  # pid of the process the worker must not outlive
    options: dict[str, Any]  # uvicorn.Config keyword arguments
    settings: Settings  # resolved by lstm-serve (flags over LSTM_ variables, --workers auto worked out)
    peers: Peers | None = None  # with several workers: this worker's place among them (set per slot by the supervisor)


def worker_main(spec: WorkerSpec, ready: Connection) -> None:
    """A worker process: die with the supervisor, listen on a socket of its own, serve until drained."""
    die_with(spec.supervisor)  # first, before anything that can take time
    configure(spec.settings.log_level, spec.settings.log_format)
    try:
        sock = worker_socket(spec.host, spec.port)
    except OSError as exc:
        log.error("worker %d cannot listen on %s:%d: %s", os.getpid(), spec.host, spec.port, exc)
        sys.exit(1)

    async def started() -> None:
        if not ready.closed:
            ready.send_bytes(READY)
            ready.close()

    sys.exit(serve(sock, spec.settings, spec.options, on_started=started, peers=spec.peers))


def _send(process: Child, signum: int) -> None:
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


@dataclass
class Slot:
    """One of the N worker places, or the job runner's: its current process and its restart history."""

    index: int
    command: list[str] | None = None  # the job runner's command; None: a worker
    process: Child | None = None
    ready: Connection | None = None  # read end of the current worker's ready pipe
    started_at: float = 0.0
    ever_ready: bool = False  # some worker of this slot has accepted connections
    backoff: float = FIRST_BACKOFF
    restart_at: float | None = None
    starts: int = 0  # processes started in this place so far

    @property
    def label(self) -> str:
        return f"worker {self.index}" if self.command is None else "the job runner"


@dataclass
class Supervisor:
    """Runs `count` workers for `spec` while holding `address` (the reserved, non-listening socket), and the
    job-runner process of `runner` (a command) when there is one."""

    address: socket.socket
    spec: WorkerSpec
    count: int
    drain_timeout: float
    runner: list[str] | None = None
    slots: list[Slot] = field(init=False)
    status: int = 0
    stopping: bool = False
    kill_at: float = math.inf
    _signals: list[int] = field(default_factory=list)
    _all_ready: bool = False

    def __post_init__(self) -> None:
        self.slots = [Slot(index) for index in range(self.count)]
        if self.runner is not None:
            self.slots.append(Slot(self.count, command=self.runner))

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (then 0) or until a worker fails at start-up (then its status)."""
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        wake_read, wake_write = os.pipe()
        for fd in (wake_read, wake_write):
            os.set_blocking(fd, False)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        signal.set_wakeup_fd(wake_write)  # a signal wakes the wait below at once
        host, port = self.address.getsockname()[:2]
        log.info("%d workers on http://%s:%d, each listening on its own socket", self.count, host, port)
        try:
            for slot in self.slots:
                self._start(slot)
            while not (self.stopping and self._alive() == []):
                self._wait(wake_read)
                self._step()
            log.info("every worker has stopped")
            return self.status
        finally:
            for process in self._alive():  # only if the loop itself failed: leave no worker behind
                process.kill()
                process.join()
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(wake_read)
            os.close(wake_write)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _alive(self) -> list[Child]:
        return [slot.process for slot in self.slots if slot.process is not None]

    def _start(self, slot: Slot) -> None:
        if slot.command is not None:
            runner = CommandProcess(
                slot.command, "lstm-serve-job-runner", self.spec.supervisor, runner_settings(self.spec.settings)
            )
            slot.process, slot.started_at, slot.restart_at, slot.ever_ready = runner, time.monotonic(), None, True
            log.info("the job runner started (pid %s)", runner.pid)
            return
        context = multiprocessing.get_context("spawn")
        reader, writer = context.Pipe(duplex=False)
        spec = self.spec
        if spec.peers is not None:  # its place, and how many held it before it (a restart lost their sequences)
            spec = replace(spec, peers=spec.peers.at(slot.index, slot.starts))
        process = context.Process(target=worker_main, args=(spec, writer), name=f"lstm-serve-worker-{slot.index}")
        process.start()
        slot.starts += 1
        writer.close()  # the worker holds the only write end: its exit closes the pipe
        slot.process, slot.ready, slot.started_at, slot.restart_at = process, reader, time.monotonic(), None
        log.info("worker %d started (pid %s)", slot.index, process.pid)

    def _wait(self, wake_read: int) -> None:
        now = time.monotonic()
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None] + [self.kill_at]
        timeout = min(TICK, max(0.0, min(due) - now))
        watched: list[Any] = [wake_read]
        for slot in self.slots:
            if slot.process is not None and slot.process.sentinel is not None:
                watched.append(slot.process.sentinel)
            if slot.ready is not None:
                watched.append(slot.ready)
        wait(watched, timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(wake_read, 512):
                pass

    def _step(self) -> None:
        while self._signals:
            self._stop(self._signals.pop(0))
        for slot in self.slots:
            self._read_ready(slot)
        for slot in self.slots:
            if slot.process is not None and not slot.process.is_alive():
                self._exited(slot)
        now = time.monotonic()
        if self.stopping:
            if now >= self.kill_at:
                for process in self._alive():
                    log.warning("%s (pid %s) still runs after the drain timeout; killing it", process.name, process.pid)
                    _send(process, signal.SIGKILL)
                self.kill_at = math.inf
        else:
            for slot in self.slots:
                if slot.restart_at is not None and now >= slot.restart_at:
                    try:
                        self._start(slot)
                    except OSError as exc:  # e.g. no memory or process slot for it right now: try again later
                        slot.restart_at = now + slot.backoff
                        log.error("%s could not be started (%s); trying again in %.1f s", slot.label, exc, slot.backoff)
                        slot.backoff = min(2 * slot.backoff, MAX_BACKOFF)
        self._reap_orphans()

    def _read_ready(self, slot: Slot) -> None:
        if slot.ready is None or not slot.ready.poll():
            return
        try:
            slot.ready.recv_bytes()
        except (EOFError, OSError):  # the worker exited before it was ready
            pass
        else:
            slot.ever_ready = True
            log.info("worker %d ready (pid %s)", slot.index, slot.process.pid if slot.process else None)
            if not self._all_ready and all(s.ever_ready for s in self.slots):  # the runner's is True from its start
                self._all_ready = True
                log.info("all %d workers ready", self.count)
        slot.ready.close()
        slot.ready = None

    def _exited(self, slot: Slot) -> None:
        assert slot.process is not None
        process, slot.process = slot.process, None
        process.join()
        if slot.ready is not None:
            slot.ready.close()
            slot.ready = None
        what = f"{slot.label} (pid {process.pid}) {describe_exit(process.exitcode)}"
        if self.stopping:
            log.info("%s", what)
            return
        if not slot.ever_ready:
            log.error("%s before it was ready; stopping lstm-serve", what)
            self.status = STARTUP_FAILURE if process.exitcode == STARTUP_FAILURE else 1
            self._stop(signal.SIGTERM)
            return
        now = time.monotonic()
        if now - slot.started_at >= STABLE_AFTER:
            slot.backoff = FIRST_BACKOFF
        slot.restart_at = now + slot.backoff
        log.warning("%s; starting another in %.1f s", what, slot.backoff)
        slot.backoff = min(2 * slot.backoff, MAX_BACKOFF)

    def _stop(self, signum: int) -> None:
        """Begin the shutdown: every worker gets SIGTERM and drains; a second SIGINT makes them skip the drain."""
        if self.stopping:
            if signum == signal.SIGINT:
                for process in self._alive():
                    _send(process, signal.SIGINT)  # uvicorn's "force exit" on a second SIGINT
            return
        self.stopping = True
        self.kill_at = time.monotonic() + self.drain_timeout + KILL_MARGIN
        for slot in self.slots:
            slot.restart_at = None
        alive = self._alive()
        log.info("%s: draining %d workers (up to %g s)", signal.Signals(signum).name, len(alive), self.drain_timeout)
        for process in alive:
            _send(process, signal.SIGTERM)

    def _reap_orphans(self) -> None:
        """Collect exited children that are not workers: a dead worker's training processes, reparented to us."""
        if not hasattr(os, "waitid"):
            return
        workers = {process.pid for process in self._alive()}
        while True:
            try:
                # WNOWAIT: look without collecting, so a worker's status stays for multiprocessing to read.
                found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if found is None or found.si_pid in workers:
                return  # nothing has exited, or a worker has: the loop handles it through its sentinel
            with contextlib.suppress(ChildProcessError):
                os.waitpid(found.si_pid, 0)
