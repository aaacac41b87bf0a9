"""PgJobQueue: the training-job queue (service.job_queue.JobQueue) in PostgreSQL, shared by every replica and worker.

One table, `lstm_jobs` (service/migrations/, component "jobs", applied by model_store.postgres.migrate at first
use), holds each job as the SQLite queue does, plus its dataset (the .npz bytes, so a runner on any host can
train on it: `claim` writes it into the runner's local job folder) and the tail of its train.log (so every
replica can answer GET /train/{id}/logs). How the contract of service/job_queue.py is kept:

- admission: the count of waiting jobs and the insert run in one transaction under an advisory lock, so two
  replicas admitting at once cannot both take the last place of `queue_max`;
- claims: one transaction under another advisory lock counts the running jobs (the cap `concurrency` holds over
  every runner) and takes the oldest queued row with `SELECT ... FOR UPDATE SKIP LOCKED` (a row a cancel holds is
  passed over, not waited for); a runner that finds nothing queued has only read;
- orphans: a runner's heartbeat stamps its running rows with the database's clock (hosts' clocks may differ);
  `fail_orphans` fails a running job whose heartbeat is older than the timeout, or whose owner is a dead process
  of this host, re-checking the heartbeat it read, and flags it cancelled so its runner, if it is only cut off
  from the database, kills the training process as soon as its next heartbeat reaches the database;
- cancel: a queued job ends at once; a running one is flagged, and its runner's heartbeat returns it;
- idle: nothing queued and nothing running costs reads only (tests/test_pg_jobs.py checks every row's xmin).

Why not procrastinate (issue 13 suggests it), piece by piece, as of procrastinate 3.10:
- the claim: JobQueue.claim caps the running jobs over every runner at `concurrency`; procrastinate's fetch
  (procrastinate_fetch_job_v2) caps nothing globally: its `lock` only serialises jobs that share a lock (a cap of
  one), and JobManager.fetch_job takes no connection of ours, so a count under our lock and its claim cannot be
  one transaction;
- the job's state: progress, result, the error's reason, the dataset and the log tail are not procrastinate's
  (its `args` are written once, at defer). They would live in a table of ours beside procrastinate_jobs, and its
  fetch, finish and cancel commit on its own connections: a crash between the two commits leaves the tables
  disagreeing, where one row updated in one transaction cannot;
- stalled jobs and abort: procrastinate ties both to its Worker (procrastinate_workers heartbeats, the task's
  `should_abort`), while our runner (service/job_runner.py) supervises lstm-train processes itself and already
  beats and polls for cancels through this interface; a heartbeat column and a cancel flag in the job's own row
  are the same mechanism without a second table.
What procrastinate is made for, `FOR UPDATE SKIP LOCKED` claims, is the statement used here.

Every failure of the database (down, restarting, unreachable) is a model_store.StorageError, which the routes
answer 503 and the runner logs once until it clears; connections come from a pool that checks each one
before use, so a restarted server is reconnected to without anyone noticing but the call that failed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

import model_store
from model_store.postgres import CONNECT_TIMEOUT_SECONDS, database_errors, migrate, migrations_in, redacted
from service.errors import BusyError, ConflictError
from service.jobs import (
    CANCELLED,
    DATASET_FILE,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    STATES,
    Job,
    JobNotFoundError,
    owner_is_dead,
)

log = logging.getLogger("service.pg_jobs")
# The pool logs a warning at every reconnect attempt while the database is down (a few a second); the runner and
# the routes say it once, and once when it clears (service/conditions.py), so only the pool's errors are kept.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
COMPONENT = "jobs"
ADMIT_LOCK = 0x6C6A6164  # 'ljad': serialises admissions (count of waiting jobs, then insert)
CLAIM_LOCK = 0x6C6A636C  # 'ljcl': serialises claims (count of running jobs, then take one)
LOG_FILE = "train.log"
# The row's columns a Job is made of: neither the dataset's bytes nor the log tail, which only their readers need.
COLUMNS = (
    "id, status, created_at, started_at, finished_at, model, preset, promote, params, dataset, epoch, max_epochs, "
    "loss, result, error, owner, cancel_requested"
)
NOW = "EXTRACT(EPOCH FROM clock_timestamp())::float8"  # the database's clock, the one every runner shares
POOL_MAX = 4  # connections per process: the routes' threads, the runner and the event hub share them
# A job taken from a runner stays flagged for it this long, so that a runner cut off from the database for less
# than this still learns, when it is back, that it must stop the training process.
RECLAIMED_SECONDS = 86_400


def _job(row: DictRow) -> Job:
    return Job(
        id=row["id"],
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        model=row["model"],
        preset=row["preset"],
        promote=row["promote"],
        params=row["params"],
        dataset=row["dataset"],
        epoch=row["epoch"],
        max_epochs=row["max_epochs"],
        loss=row["loss"],
        result=row["result"],
        error=row["error"],
        owner=row["owner"],
        cancel_requested=row["cancel_requested"],
    )


def _not_found(job_id: str) -> JobNotFoundError:
    shown = job_id if len(job_id) <= 80 else job_id[:77] + "..."  # ids come from URLs: never a 60 kB one back
    return JobNotFoundError(f"training job {shown!r} not found")


def npz_bytes(arrays: tuple[np.ndarray, np.ndarray]) -> bytes:
    """The dataset as the bytes of the .npz file lstm-train --dataset reads."""
    buffer = io.BytesIO()
    np.savez(buffer, inputs=arrays[0], targets=arrays[1])
    return buffer.getvalue()


def tail_of(path: Path, limit: int) -> str | None:
    """The last `limit` bytes of a text file, decoded (None when there is no file)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, io.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return None


class PgJobQueue:
    """The training jobs of one PostgreSQL database; each runner's job folders under `work_dir` on its own host."""

    def __init__(self, url: str, work_dir: Path, log_tail_bytes: int) -> None:
        self.url = url
        self.work_dir = Path(work_dir)
        self.log_tail_bytes = log_tail_bytes
        self._pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX,
            open=False,
            timeout=CONNECT_TIMEOUT_SECONDS,  # a getconn waiting longer is the database's failure: StorageError
            check=ConnectionPool.check_connection,  # a connection a server restart broke is replaced, not handed out
            kwargs={"row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
            connection_class=psycopg.Connection[DictRow],
            name="lstm-jobs",
        )
        self._pool.open(wait=False)  # never blocks: a database down at start-up fails the first call, not the start
        self._ready = False
        try:
            self._setup()
        except model_store.StorageError as exc:  # serving goes on; the routes answer 503 and the runner retries
            log.warning("training jobs are unavailable until the database answers: %s", exc)

    def describe(self) -> str:
        return f"PostgreSQL {redacted(self.url)}"

    def close(self) -> None:
        self._pool.close()

    def _setup(self) -> None:
        migrate(self.url, COMPONENT, migrations_in("service.migrations"))
        self._ready = True

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[psycopg.Connection[DictRow]]:
        """A connection in a transaction, committed when the body ends; any database failure a StorageError."""
        if not self._ready:
            self._setup()
        with database_errors(doing, self.url), self._pool.connection() as conn:
            yield conn

    def _read(self) -> contextlib.AbstractContextManager[psycopg.Connection[DictRow]]:
        return self._transaction("reading the training-job database")

    def _write(self) -> contextlib.AbstractContextManager[psycopg.Connection[DictRow]]:
        return self._transaction("writing the training-job database")

    def job_dir(self, job_id: str) -> Path:
        return self.work_dir / job_id

    def create(
        self,
        *,
        model: str,
        preset: str,
        promote: str,
        params: dict[str, Any],
        max_epochs: int,
        queue_max: int,
        dataset: dict[str, Any] | None = None,
        job_id: str | None = None,
        arrays: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Job:
        """Queue a job with its dataset in the same row (never one without the other), or raise BusyError."""
        job_id = job_id or uuid.uuid4().hex
        npz = None if arrays is None else npz_bytes(arrays)
        with self._write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADMIT_LOCK,))
            row = conn.execute("SELECT COUNT(*) AS n FROM lstm_jobs WHERE status = %s", (QUEUED,)).fetchone()
            waiting = row["n"] if row else 0
            if waiting >= queue_max:
                raise BusyError(f"the training queue is full ({waiting} jobs waiting); try again later")
            created = conn.execute(
                f"INSERT INTO lstm_jobs (id, status, created_at, model, preset, promote, params, dataset, dataset_npz,"
                f" max_epochs) VALUES (%s, %s, {NOW}, %s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
                (
                    job_id,
                    QUEUED,
                    model,
                    preset,
                    promote,
                    Jsonb(params),
                    None if dataset is None else Jsonb(dataset),
                    npz,
                    max_epochs,
                ),
            ).fetchone()
        assert created is not None
        return _job(created)

    def get(self, job_id: str) -> Job:
        with self._read() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM lstm_jobs WHERE id = %s", (job_id,)).fetchone()
        if row is None:
            raise _not_found(job_id)
        return _job(row)

    def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        wanted = list(dict.fromkeys(job_ids))
        if not wanted:
            return {}
        with self._read() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM lstm_jobs WHERE id = ANY(%s)", (wanted,)).fetchall()
        return {row["id"]: _job(row) for row in rows}

    def page(self, limit: int, offset: int) -> tuple[list[Job], int]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM lstm_jobs ORDER BY seq DESC LIMIT %s OFFSET %s", (limit, offset)
            ).fetchall()
            total = conn.execute("SELECT COUNT(*) AS n FROM lstm_jobs").fetchone()
        return [_job(row) for row in rows], total["n"] if total else 0

    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute("SELECT status, COUNT(*) AS n FROM lstm_jobs GROUP BY status").fetchall()
        found = dict.fromkeys(STATES, 0)
        found.update({row["status"]: row["n"] for row in rows})
        return found

    def log_tail(self, job_id: str, limit: int) -> str:
        """The last `limit` bytes of the job's train.log as its runner last stored them ('' before it started)."""
        with self._read() as conn:
            row = conn.execute("SELECT log_tail FROM lstm_jobs WHERE id = %s", (job_id,)).fetchone()
        if row is None:
            raise _not_found(job_id)
        text: str = row["log_tail"] or ""
        return text[-limit:]

    def claim(self, owner: str, concurrency: int) -> Job | None:
        """The oldest queued job, now running for `owner`, with its dataset written into its job folder."""
        with self._read() as conn:  # nothing queued (the usual case): a read, no lock, no write
            if conn.execute("SELECT 1 FROM lstm_jobs WHERE status = %s LIMIT 1", (QUEUED,)).fetchone() is None:
                return None
        with self._write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))  # the count below holds until commit
            running = conn.execute("SELECT COUNT(*) AS n FROM lstm_jobs WHERE status = %s", (RUNNING,)).fetchone()
            if running is not None and running["n"] >= concurrency:
                return None
            row = conn.execute(
                f"UPDATE lstm_jobs SET status = %s, started_at = {NOW}, owner = %s, heartbeat_at = {NOW} "
                "WHERE id = (SELECT id FROM lstm_jobs WHERE status = %s ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {COLUMNS}, dataset_npz",
                (RUNNING, owner, QUEUED),
            ).fetchone()
        if row is None:
            return None
        job = _job(row)
        try:
            self._materialise(job.id, row["dataset_npz"])
        except OSError as exc:  # this host's disk: the job fails with the reason rather than training on nothing
            self.finish(job.id, FAILED, error=f"could not write the dataset on the runner's host: {exc}")
            return None
        return job

    def _materialise(self, job_id: str, npz: bytes | None) -> None:
        """The job's folder on this host, with its dataset (written under another name, then renamed)."""
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        if npz is not None:
            partial = folder / f".{DATASET_FILE}.partial"
            partial.write_bytes(npz)
            partial.rename(folder / DATASET_FILE)

    def heartbeat(self, owner: str) -> list[str]:
        """Stamp `owner`'s running jobs; the ids of its jobs to stop: cancelled, or taken from it as orphans."""
        with self._write() as conn:
            conn.execute(
                f"UPDATE lstm_jobs SET heartbeat_at = {NOW} WHERE owner = %s AND status = %s", (owner, RUNNING)
            )
            rows = conn.execute(
                "SELECT id FROM lstm_jobs WHERE owner = %s AND cancel_requested AND (status = %s OR (status = %s"
                f" AND finished_at > {NOW} - %s))",
                (owner, RUNNING, FAILED, RECLAIMED_SECONDS),
            ).fetchall()
        return [row["id"] for row in rows]

    def progress(self, job_id: str, epoch: int, max_epochs: int, loss: float) -> None:
        """Record a running job's progress, and the tail of its train.log with it."""
        tail = tail_of(self.job_dir(job_id) / LOG_FILE, self.log_tail_bytes)
        with self._write() as conn:
            conn.execute(
                "UPDATE lstm_jobs SET epoch = %s, max_epochs = %s, loss = %s, log_tail = COALESCE(%s::text, log_tail) "
                "WHERE id = %s AND status = %s",
                (epoch, max_epochs, loss, tail, job_id, RUNNING),
            )

    def finish(
        self, job_id: str, status: str, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> Job:
        """Record how a running job ended and the end of its train.log; then its folder on this host goes."""
        tail = tail_of(self.job_dir(job_id) / LOG_FILE, self.log_tail_bytes)
        with self._write() as conn:
            conn.execute(
                f"UPDATE lstm_jobs SET status = %s, finished_at = {NOW}, result = %s, error = %s, dataset_npz = NULL "
                "WHERE id = %s AND status = %s",
                (status, None if result is None else Jsonb(result), error, job_id, RUNNING),
            )
            if tail is not None:  # also when the job was taken from this runner meanwhile: the log is still its own
                conn.execute("UPDATE lstm_jobs SET log_tail = %s WHERE id = %s", (tail, job_id))
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        return self.get(job_id)

    def request_cancel(self, job_id: str) -> Job:
        with self._write() as conn:
            row = conn.execute("SELECT status FROM lstm_jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
            if row is None:
                raise _not_found(job_id)
            status = row["status"]
            if status in FINISHED:
                raise ConflictError(f"training job {job_id} has already finished ({status}); nothing to cancel")
            if status == QUEUED:
                conn.execute(
                    f"UPDATE lstm_jobs SET status = %s, finished_at = {NOW}, error = %s, dataset_npz = NULL "
                    "WHERE id = %s",
                    (CANCELLED, "cancelled before it started", job_id),
                )
            else:
                conn.execute("UPDATE lstm_jobs SET cancel_requested = true WHERE id = %s", (job_id,))
        return self.get(job_id)

    def fail_orphans(self, heartbeat_timeout: float) -> list[str]:
        """Running jobs whose runner is silent longer than `heartbeat_timeout`, or a dead process of this host,
        become failed with the reason (read first; each re-checked under its row lock)."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT id, owner, heartbeat_at, {NOW} AS now FROM lstm_jobs WHERE status = %s", (RUNNING,)
            ).fetchall()
        orphans = []
        for row in rows:
            silent = row["heartbeat_at"] is None or row["now"] - row["heartbeat_at"] > heartbeat_timeout
            # A dead process of this host first: the surer reason, whether or not its heartbeat is stale yet.
            if owner_is_dead(row["owner"]):
                reason = (
                    f"the process running this job ({row['owner']}) stopped before it finished; nothing was registered"
                )
            elif silent:
                reason = (
                    f"its runner ({row['owner']}) sent no heartbeat for over {heartbeat_timeout:g} s "
                    "(LSTM_JOB_HEARTBEAT_TIMEOUT): it stopped, or lost the database and stops the training when "
                    "it is back"
                )
            else:
                continue
            orphans.append((row, reason))
        if not orphans:
            return []
        failed = []
        with self._write() as conn:
            for row, reason in orphans:
                changed = conn.execute(
                    f"UPDATE lstm_jobs SET status = %s, finished_at = {NOW}, error = %s, cancel_requested = true, "
                    "dataset_npz = NULL WHERE id = %s AND status = %s AND heartbeat_at IS NOT DISTINCT FROM %s",
                    (FAILED, reason, row["id"], RUNNING, row["heartbeat_at"]),
                )
                if changed.rowcount:  # else its runner finished it or beat meanwhile: it is alive after all
                    failed.append(row["id"])
        return failed
