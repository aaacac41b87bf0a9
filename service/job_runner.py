"""The training-job runner: claims queued jobs and runs each in its own lstm-train process.

Training never runs on the serving event loop or in its threads: every job is a child process
(`python -m training ... --progress-jsonl`) at a lower CPU priority with its own thread count.
One runner per lstm-serve: in the serving process with one worker, else in the supervisor's job-runner
process (service/lstm_worker.py). It claims jobs through a JobQueue, so even several runners (other
lstm-serve or lstm-worker processes on the same queue) run a job exactly once and the global concurrency
limit holds. An idle runner only reads the queue. The child exits with its parent, so a killed runner
leaves no training behind, and it registers its version only after every check has passed, so a
cancelled or killed job never leaves a partial version.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread

import model_store
from service.conditions import Condition
from service.config import Settings
from service.job_events import JobEvents
from service.job_queue import JobQueue
from service.jobs import CANCELLED, FAILED, SUCCEEDED, Job, this_owner

log = logging.getLogger("service.jobs")
STDERR_TAIL = 4000  # characters of a failed child's stderr copied into the server log
ERROR_MAX = 500  # characters of a job's one-line error
ERROR_PREFIX = "lstm-train: error: "
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
# Longest stdout line accepted from the child. asyncio's default (64 KiB) leaves little room for a
# result line with its metrics; 1 MiB does, and still bounds what one line can hold in memory. A longer
# line makes readline() raise ValueError, which fails the job (see _follow).
STDOUT_LINE_LIMIT = 1 << 20


@dataclass(frozen=True)
class RunnerSettings:
    concurrency: int
    time_limit: float
    poll_interval: float
    heartbeat_timeout: float
    torch_threads: int
    nice: int
    memory_budget_mb: float = 0.0  # lstm-train refuses a run estimated over it (0: no check)
    memory_limit_mb: int = 0  # RLIMIT_DATA of the training process (0: none)
    pt2: bool = True  # export the .pt2 files (lstm-train --no-pt2 otherwise)

    @classmethod
    def from_settings(cls, settings: Settings) -> RunnerSettings:
        return cls(
            concurrency=settings.job_concurrency,
            time_limit=settings.job_time_limit,
            poll_interval=settings.job_poll_interval,
            heartbeat_timeout=settings.job_heartbeat_timeout,
            torch_threads=settings.job_torch_threads,
            nice=settings.job_nice,
            memory_budget_mb=settings.job_memory_budget_mb,
            memory_limit_mb=settings.job_memory_limit,
            pt2=settings.job_pt2,
        )


def child_environment() -> dict[str, str]:
    """The environment of a child that runs lstm-train (a training job, an import): this process's, without its
    LSTM_ settings (the child gets flags) or the serving workers' prometheus multiprocess folder."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LSTM_")}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return environment


def child_setup(memory_limit_mb: int) -> None:
    """Runs in the training child between fork and exec: die with the parent, and cap the data size.

    PR_SET_PDEATHSIG sends SIGKILL the moment the worker that spawned the child dies, even by SIGKILL (the
    child's --exit-with-parent polling stays as a fallback). RLIMIT_DATA, not RLIMIT_AS: torch reserves
    far more address space than it touches (lstm-train at 542 MiB peak RSS needs an RLIMIT_AS of 1.2 GiB
    but an RLIMIT_DATA of 0.8 GiB: docs/training.md), so a data limit stays close to the memory really
    used. Kept to two system calls through objects bound at import: after a fork in a threaded process,
    anything that imports or takes a lock could deadlock.
    """
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if memory_limit_mb:
        limit = memory_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def one_line(text: str) -> str:
    """`text` as one line of at most ERROR_MAX characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= ERROR_MAX else flat[: ERROR_MAX - 1] + "…"


def exit_reason(returncode: int | None, stderr_text: str) -> str:
    """Why a training process that gave no error event failed, in one line without its traceback."""
    if returncode is not None and returncode < 0:
        try:
            killed = f" (killed by {signal.Signals(-returncode).name})"
        except ValueError:
            killed = ""
        return f"training exited with status {returncode}{killed}; nothing was registered"
    errors = [line[len(ERROR_PREFIX) :] for line in stderr_text.splitlines() if line.startswith(ERROR_PREFIX)]
    if errors:
        return one_line(f"training exited with status {returncode}: {errors[-1]}")
    if "MemoryError" in stderr_text or "Cannot allocate memory" in stderr_text:
        return f"training ran out of memory while starting (exit status {returncode}); nothing was registered"
    return f"training exited with status {returncode} without a reason; its log is in the server log"


def training_command(
    job: Job,
    store_dir: str,
    torch_threads: int,
    dataset_path: Path | None,
    memory_budget_mb: float = 0.0,
    reach_flags: Sequence[str] = (),
    pt2: bool = True,
) -> list[str]:
    """The lstm-train invocation for `job` (flags only: the child's environment holds no LSTM_ settings);
    `reach_flags` are the database and S3 settings of a store that is not a folder (StoreSettings.reach_flags)."""
    command = [
        sys.executable,
        "-m",
        "training",
        "--store",
        store_dir,
        *reach_flags,
        "--model",
        job.model,
        "--preset",
        job.preset,
        "--promote",
        job.promote,
        "--progress-jsonl",
        "--exit-with-parent",
        "--torch-threads",
        str(torch_threads),
        "--memory-budget-mb",
        f"{memory_budget_mb:g}",
    ]
    for name, value in job.params.items():
        command += [f"--{name.replace('_', '-')}", repr(value) if isinstance(value, float) else str(value)]
    if dataset_path is not None:
        command += ["--dataset", str(dataset_path)]
    if not pt2:
        command.append("--no-pt2")
    return command


@dataclass
class JobRunner:
    """Claims jobs, supervises their processes, records what happened; one per lstm-serve."""

    jobs: JobQueue
    store_dir: str  # the store's location (a folder, or s3://...)
    settings: RunnerSettings
    on_success: Callable[[], Awaitable[None]]
    on_change: Callable[[str], None] = lambda job_id: None  # a job's row changed (progress, outcome)
    reach_flags: Sequence[str] = ()  # how the children reach a store that is not a folder (its database, S3)
    owner: str = field(default_factory=this_owner)
    _running: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _closing: bool = False
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        """Look for work now rather than at the next poll (a job was just queued or cancelled)."""
        self._wake.set()

    async def run_forever(self) -> None:
        trouble = Condition(log, "job runner paused")
        while True:
            try:
                await self.tick()
            except model_store.StorageError as exc:  # a read-only or full store: said once, and once when it clears
                trouble.failing(str(exc))
            except Exception as exc:  # the runner must outlive a bad tick, without a traceback every tick
                trouble.failing(f"tick failed: {exc!r}", traceback=True)
            else:
                trouble.ok()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            self._wake.clear()

    async def tick(self) -> None:
        """Heartbeat and cancellations of our jobs, orphans, then claims: each writes only when there is work."""
        if self._tasks:  # jobs of ours run: only then is there a heartbeat to write
            cancel = await anyio.to_thread.run_sync(self.jobs.heartbeat, self.owner)
            for job_id in cancel:
                process = self._running.get(job_id)
                if process is not None and process.returncode is None:
                    log.info("cancelling job %s (pid %s)", job_id, process.pid)
                    process.send_signal(signal.SIGKILL)
        for job_id in await anyio.to_thread.run_sync(self.jobs.fail_orphans, self.settings.heartbeat_timeout):
            log.warning("job %s was running when its runner stopped; marked failed", job_id)
            self.on_change(job_id)
        while len(self._running) < self.settings.concurrency:
            job = await anyio.to_thread.run_sync(self.jobs.claim, self.owner, self.settings.concurrency)
            if job is None:
                break
            self.on_change(job.id)
            task = asyncio.create_task(self.execute(job), name=f"job-{job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(0)  # let execute() register its process before claiming again

    async def execute(self, job: Job) -> None:
        """Run one claimed job to its end and record the outcome."""
        job_dir = self.jobs.job_dir(job.id)
        job_dir.mkdir(parents=True, exist_ok=True)
        dataset = job_dir / "dataset.npz"
        # A job queued with a dataset trains on it or fails (lstm-train: no such file); never on the preset's data.
        command = training_command(
            job,
            self.store_dir,
            self.settings.torch_threads,
            dataset if job.dataset is not None else None,
            self.settings.memory_budget_mb,
            self.reach_flags,
            self.settings.pt2,
        )
        environment = child_environment()
        result: dict[str, Any] | None = None
        error: str | None = None
        stderr_path = job_dir / "train.log"
        try:
            with open(stderr_path, "wb") as stderr:
                process = await asyncio.create_subprocess_exec(
                    "nice", "-n", str(self.settings.nice), *command,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                    env=environment,
                    limit=STDOUT_LINE_LIMIT,
                    preexec_fn=lambda: child_setup(self.settings.memory_limit_mb),
                )  # fmt: skip
                self._running[job.id] = process
                log.info("job %s started (pid %s)", job.id, process.pid)
                try:
                    result, error = await asyncio.wait_for(self._follow(job, process), self.settings.time_limit)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):  # it may have exited as the limit fired
                        process.kill()
                    error = f"the job exceeded its time limit of {self.settings.time_limit:g} s and was stopped"
                await process.wait()
        except OSError as exc:
            error = f"could not start the training process: {exc}"
        finally:
            self._running.pop(job.id, None)
        if result is not None:
            status = SUCCEEDED
        elif await self._cancel_requested(job.id):
            status, error = CANCELLED, "cancelled while running; nothing was registered"
        elif self._closing:
            status, error = FAILED, "the service was stopped while the job ran; nothing was registered"
        else:
            status = FAILED
            tail = stderr_path.read_text(errors="replace")[-STDERR_TAIL:].strip() if stderr_path.exists() else ""
            if error is None:
                error = exit_reason(process.returncode, tail)
            # The details (a traceback, paths) go to the server log and train.log, never into the job's error.
            log.warning("job %s failed: %s; the end of its train.log:\n%s", job.id, error, tail or "(empty)")
        await self._record(job.id, status, result, error)
        self.on_change(job.id)
        log.info("job %s %s", job.id, status)
        if status == SUCCEEDED:
            await self.on_success()

    async def _cancel_requested(self, job_id: str) -> bool:
        """Whether the job's cancellation was asked for (false when the database cannot say: it failed, then)."""
        try:
            return (await anyio.to_thread.run_sync(self.jobs.get, job_id)).cancel_requested
        except model_store.StorageError as exc:
            log.warning("job %s: cannot read whether it was cancelled: %s", job_id, exc)
            return False

    async def _record(self, job_id: str, status: str, result: dict[str, Any] | None, error: str | None) -> None:
        """Record a job's outcome, retried while the job database is unreachable (a PostgreSQL restart), for as long
        as the job would still be its runner's: past the heartbeat timeout another runner has failed it anyway."""
        trouble = Condition(log, f"job {job_id}: outcome not recorded")
        deadline = time.monotonic() + self.settings.heartbeat_timeout
        while True:
            try:
                await anyio.to_thread.run_sync(lambda: self.jobs.finish(job_id, status, result=result, error=error))
            except model_store.StorageError as exc:
                trouble.failing(str(exc))
                if time.monotonic() > deadline or self._closing:
                    raise
                await asyncio.sleep(self.settings.poll_interval)
            else:
                trouble.ok()
                return

    async def _follow(self, job: Job, process: asyncio.subprocess.Process) -> tuple[dict[str, Any] | None, str | None]:
        """Read the child's JSON lines until it exits: progress into the database, then its result or error."""
        assert process.stdout is not None
        trouble = Condition(log, f"job {job.id}: progress not recorded")
        result: dict[str, Any] | None = None
        error: str | None = None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # asyncio's LimitOverrunError, wrapped: a line over STDOUT_LINE_LIMIT
                with contextlib.suppress(ProcessLookupError):  # it may have exited already
                    process.kill()
                limit = f"{STDOUT_LINE_LIMIT >> 20} MiB"
                return None, f"the training process wrote a line longer than {limit} to its stdout and was stopped"
            if not raw:
                break
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            kind = event.pop("event", None)
            if kind == "progress":
                try:
                    await anyio.to_thread.run_sync(
                        self.jobs.progress, job.id, int(event["epoch"]), int(event["max_epochs"]), float(event["loss"])
                    )
                except model_store.StorageError as exc:  # a database restart: training goes on, the next epoch is
                    trouble.failing(str(exc))  # recorded once it is back (said once, not every epoch)
                else:
                    trouble.ok()
                self.on_change(job.id)
            elif kind == "result":
                result = {
                    "model": event["model"],
                    "version": event["version"],
                    "metrics": event["metrics"],
                    "promoted": event["promoted"],
                    "promotion_reason": event["promotion_reason"],
                }
            elif kind == "error":
                error = one_line(str(event.get("message")))
        await process.wait()
        if process.returncode != 0:
            result = None  # a result line followed by a failure exit cannot be trusted
        return result, error

    async def close(self) -> None:
        """Stop supervising: kill our children (their jobs become failed) and wait for the records."""
        self._closing = True
        for process in list(self._running.values()):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        deadline = time.monotonic() + 10
        while self._tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


@dataclass(frozen=True)
class JobWork:
    """What the routes of a serving process need of the job machinery: its event hub, and its runner if any."""

    events: JobEvents
    runner: JobRunner | None

    def wake(self) -> None:
        """A job was queued or cancelled: an in-process runner looks now; a runner elsewhere at its next poll."""
        if self.runner is not None:
            self.runner.wake()


@contextlib.asynccontextmanager
async def run_jobs(
    settings: Settings, jobs: JobQueue, on_success: Callable[[], Awaitable[None]]
) -> AsyncIterator[JobWork]:
    """The job side of a serving process, for the body: its event hub, and the runner when this process runs it.

    settings.job_runner false (the workers of `lstm-serve --workers N`, whose supervisor runs one job-runner
    process): no runner here, but jobs left running by a dead process are still failed before the first
    request is answered. On the way out the streams end, and the runner's training children are killed
    and their jobs failed."""
    events = JobEvents(jobs)
    runner = None
    if settings.job_runner:
        runner = JobRunner(
            jobs,
            settings.store_dir,
            RunnerSettings.from_settings(settings),
            on_success,
            events.notify,
            reach_flags=settings.reach_flags(),
        )
    try:
        if runner is None:
            await recover(jobs, settings.job_heartbeat_timeout)
            yield JobWork(events, None)
        else:
            async with running(runner):
                yield JobWork(events, runner)
    finally:
        await events.close()


async def recover(jobs: JobQueue, heartbeat_timeout: float) -> None:
    """Jobs left running by a process that died become failed (a read only, when there are none)."""
    try:
        failed = await anyio.to_thread.run_sync(jobs.fail_orphans, heartbeat_timeout)
    except model_store.StorageError as exc:  # a read-only store still serves; a runner's ticks retry this
        log.warning("cannot check for jobs left running: %s", exc)
        return
    for job_id in failed:
        log.warning("job %s was running when its runner stopped; marked failed", job_id)


@contextlib.asynccontextmanager
async def running(runner: JobRunner) -> AsyncIterator[JobRunner]:
    """`runner` at work for the body: orphans failed first, ticks meanwhile; then closed (its jobs' children
    killed, those jobs failed with the reason)."""
    await recover(runner.jobs, runner.settings.heartbeat_timeout)
    task = asyncio.create_task(runner.run_forever(), name="job-runner")
    try:
        yield runner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.close()
