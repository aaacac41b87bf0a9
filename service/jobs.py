"""Training-job state in SQLite (WAL) inside the store folder: shared by every worker, kept across restarts.

Each call opens its own short connection, so any thread or process may use a JobStore. State
changes that must not race (queue admission, claiming a job, cancelling) run in BEGIN
IMMEDIATE transactions: SQLite then lets one writer at a time through, across processes.

A database that cannot be opened, read or written (a read-only or full store, a damaged file)
raises model_store.StorageError naming the cause, never a bare sqlite3 error; a store that is
read-only at start-up still serves, and the jobs table is set up once it can be written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import reprlib
import shutil
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import model_store
from model_store.errors import storage_errors
from service.errors import BusyError, ConflictError, NotFoundError

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
JOBS_DIR = ".jobs"  # inside the store; a leading dot keeps it out of the model listing
_shown = reprlib.Repr()  # ids come from URLs: a 60 kB one must not come back whole in the 404
_shown.maxstring = 80
log = logging.getLogger("service.jobs")
DATASET_FILE = "dataset.npz"
# SQLite's primary result codes that are the file system's condition, with the errno that says the same.
_SQLITE_ERRNO = {8: errno.EROFS, 10: errno.EIO, 13: errno.ENOSPC, 14: errno.ENOENT}  # READONLY IOERR FULL CANTOPEN

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    model TEXT NOT NULL,
    preset TEXT NOT NULL,
    promote TEXT NOT NULL,
    params TEXT NOT NULL,
    dataset TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    max_epochs INTEGER NOT NULL,
    loss REAL,
    result TEXT,
    error TEXT,
    owner TEXT,
    heartbeat_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
"""


class JobNotFoundError(NotFoundError):
    """No job with that id."""


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def this_owner() -> str:
    """Who runs a job: host and pid, so a restarted service can tell its dead predecessors' jobs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(owner: str | None) -> bool:
    """True when `owner` is a process on this host that no longer exists."""
    if not owner:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host: only its heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Job:
    """One row of the jobs table."""

    id: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    model: str
    preset: str
    promote: str
    params: dict[str, Any]
    dataset: dict[str, Any] | None
    epoch: int
    max_epochs: int
    loss: float | None
    result: dict[str, Any] | None
    error: str | None
    owner: str | None
    cancel_requested: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            status=row["status"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            model=row["model"],
            preset=row["preset"],
            promote=row["promote"],
            params=json.loads(row["params"]),
            dataset=None if row["dataset"] is None else json.loads(row["dataset"]),
            epoch=row["epoch"],
            max_epochs=row["max_epochs"],
            loss=row["loss"],
            result=None if row["result"] is None else json.loads(row["result"]),
            error=row["error"],
            owner=row["owner"],
            cancel_requested=bool(row["cancel_requested"]),
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def stage(self) -> tuple[int, int]:
        """How far the job has come (queued, running, finished; then its epoch): a later read is never less."""
        return (2 if self.finished else 1 if self.status == RUNNING else 0), self.epoch

    def public(self) -> dict[str, Any]:
        """The job as the API shows it."""
        shown: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "model": self.model,
            "preset": self.preset,
            "promote": self.promote,
            "params": self.params,
            "progress": {"epoch": self.epoch, "max_epochs": self.max_epochs, "loss": self.loss},
        }
        if self.dataset is not None:
            shown["dataset"] = self.dataset
        if self.result is not None:
            shown["result"] = self.result
        if self.error is not None:
            shown["error"] = self.error
        return shown


def _file_system_state(folder: Path) -> tuple[str, int] | None:
    """What is wrong with the file system under `folder`, if it is read-only, full or not writable to us.

    SQLite often says only "unable to open database file"; this says why."""
    try:
        stats = os.statvfs(folder if folder.exists() else folder.parent)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return "the store's file system is mounted read-only", errno.EROFS
    if stats.f_bavail == 0:
        return "the store's file system is full", errno.ENOSPC
    if not os.access(folder if folder.exists() else folder.parent, os.W_OK):
        return "the store is not writable by this process", errno.EACCES
    return None


def _storage_error(exc: sqlite3.Error, doing: str, folder: Path) -> model_store.StorageError:
    """The StorageError for a failed SQLite call: its message (no path), why, and an errno when known."""
    cause = f"{exc} (SQLite)"
    code = _SQLITE_ERRNO.get(getattr(exc, "sqlite_errorcode", -1) & 0xFF)
    if code is None and "disk is full" in str(exc):
        code = errno.ENOSPC
    state = _file_system_state(folder)
    if state is not None:
        cause, code = f"{cause}; {state[0]}", state[1]
    return model_store.storage_error(doing, cause, code)


def _is_storage_failure(exc: sqlite3.Error) -> bool:
    # OperationalError: read-only, full, locked, cannot open, I/O; a bare DatabaseError: a damaged file.
    # IntegrityError, ProgrammingError and the like are bugs of ours, not the storage's.
    return type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError)


class JobStore:
    """The jobs table of one store folder: the SQLite service.job_queue.JobQueue.

    The runner's calls take the write lock only when a read inside the same call found work: an idle queue
    is read every poll, never written (so the database file and its WAL stay untouched).
    """

    def __init__(self, store_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(store_dir) / JOBS_DIR
        self.path = self.dir / "jobs.sqlite3"
        self._ready = False
        try:
            self._setup()
        except model_store.StorageError as exc:  # e.g. a read-only store: serving goes on, jobs answer 503
            log.warning("training jobs are unavailable until the store can be written: %s", exc)

    def _setup(self) -> None:
        with storage_errors("creating the training-job database"):
            self.dir.mkdir(parents=True, exist_ok=True)
        with self._open("creating the training-job database") as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        self._ready = True

    @contextlib.contextmanager
    def _open(self, doing: str) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
                yield db
            finally:
                db.close()
        except sqlite3.Error as exc:
            if not _is_storage_failure(exc):
                raise
            raise _storage_error(exc, doing, self.dir) from exc

    @contextlib.contextmanager
    def _connect(self, doing: str = "reading the training-job database") -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self._setup()
        with self._open(doing) as db:
            yield db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect("writing the training-job database") as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # a failed write may have ended the transaction already
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def job_dir(self, job_id: str) -> Path:
        return self.dir / job_id

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
        """Queue a job, or raise BusyError when `queue_max` jobs are already waiting.

        `arrays` (the user's inputs and targets) are stored beside the job before it is queued, so a job
        is never queued without the data it names (a full disk fails the request, not the job).
        """
        job_id = job_id or uuid.uuid4().hex
        if arrays is not None:
            self._save_dataset(job_id, arrays)
        try:
            self._insert(model, preset, promote, params, max_epochs, queue_max, dataset, job_id)
        except BaseException:
            if arrays is not None:
                shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
            raise
        return self.get(job_id)

    def _save_dataset(self, job_id: str, arrays: tuple[np.ndarray, np.ndarray]) -> None:
        with storage_errors("storing the training dataset"):
            job_dir = self.job_dir(job_id)
            job_dir.mkdir(parents=True, exist_ok=True)
            partial = job_dir / f".{DATASET_FILE}.partial"
            with open(partial, "wb") as handle:
                np.savez(handle, inputs=arrays[0], targets=arrays[1])
            partial.rename(job_dir / DATASET_FILE)

    def _insert(
        self,
        model: str,
        preset: str,
        promote: str,
        params: dict[str, Any],
        max_epochs: int,
        queue_max: int,
        dataset: dict[str, Any] | None,
        job_id: str,
    ) -> None:
        with self._write() as db:
            waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (QUEUED,)).fetchone()[0]
            if waiting >= queue_max:
                raise BusyError(f"the training queue is full ({waiting} jobs waiting); try again later")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            db.execute(
                "INSERT INTO jobs (id, seq, status, created_at, model, preset, promote, params, dataset, max_epochs)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    seq,
                    QUEUED,
                    time.time(),
                    model,
                    preset,
                    promote,
                    json.dumps(params),
                    None if dataset is None else json.dumps(dataset),
                    max_epochs,
                ),
            )

    def get(self, job_id: str) -> Job:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"training job {_shown.repr(job_id)} not found")
        return Job.from_row(row)

    def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        """The jobs of `job_ids` that exist, by id, in one query."""
        wanted = list(dict.fromkeys(job_ids))
        if not wanted:
            return {}
        with self._connect() as db:
            marks = ", ".join("?" * len(wanted))
            rows = db.execute(f"SELECT * FROM jobs WHERE id IN ({marks})", wanted).fetchall()
        return {row["id"]: Job.from_row(row) for row in rows}

    def page(self, limit: int, offset: int) -> tuple[list[Job], int]:
        """A page of jobs, newest first, and the total count."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ? OFFSET ?", (limit, offset)).fetchall()
            total = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        return [Job.from_row(row) for row in rows], total

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        found = dict.fromkeys(STATES, 0)
        found.update({row[0]: row[1] for row in rows})
        return found

    def claim(self, owner: str, concurrency: int) -> Job | None:
        """Take the oldest queued job for `owner` if fewer than `concurrency` jobs run anywhere."""
        with self._connect() as db:  # nothing queued (the usual case): no write lock, no write
            if db.execute("SELECT 1 FROM jobs WHERE status = ? LIMIT 1", (QUEUED,)).fetchone() is None:
                return None
        with self._write() as db:  # counted again under the lock: another runner may have claimed it meanwhile
            running = db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (RUNNING,)).fetchone()[0]
            if running >= concurrency:
                return None
            row = db.execute("SELECT id FROM jobs WHERE status = ? ORDER BY seq LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            now = time.time()
            db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, owner = ?, heartbeat_at = ? WHERE id = ?",
                (RUNNING, now, owner, now, row["id"]),
            )
        return self.get(row["id"])

    def heartbeat(self, owner: str) -> list[str]:
        """Mark `owner`'s running jobs alive; returns the ids whose cancellation was requested."""
        with self._write() as db:
            db.execute("UPDATE jobs SET heartbeat_at = ? WHERE owner = ? AND status = ?", (time.time(), owner, RUNNING))
            rows = db.execute(
                "SELECT id FROM jobs WHERE owner = ? AND status = ? AND cancel_requested = 1", (owner, RUNNING)
            ).fetchall()
        return [row["id"] for row in rows]

    def progress(self, job_id: str, epoch: int, max_epochs: int, loss: float) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET epoch = ?, max_epochs = ?, loss = ? WHERE id = ? AND status = ?",
                (epoch, max_epochs, loss, job_id, RUNNING),
            )

    def finish(
        self, job_id: str, status: str, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> Job:
        """Record how a running job ended (only a running job can end)."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, result = ?, error = ? WHERE id = ? AND status = ?",
                (status, time.time(), None if result is None else json.dumps(result), error, job_id, RUNNING),
            )
        return self.get(job_id)

    def request_cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or ask the runner of a running one to stop it; 409 once finished."""
        with self._write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"training job {_shown.repr(job_id)} not found")
            status = row["status"]
            if status in FINISHED:
                raise ConflictError(f"training job {job_id} has already finished ({status}); nothing to cancel")
            if status == QUEUED:
                db.execute(
                    "UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                    (CANCELLED, time.time(), "cancelled before it started", job_id),
                )
            else:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return self.get(job_id)

    def log_tail(self, job_id: str, limit: int) -> str:
        """The last `limit` bytes of the job's train.log in the store folder ('' before it started)."""
        self.get(job_id)  # JobNotFoundError for no such job
        path = self.job_dir(job_id) / "train.log"
        with storage_errors("reading the job's train.log"):
            try:
                with open(path, "rb") as handle:
                    handle.seek(max(0, path.stat().st_size - limit))
                    return handle.read().decode(errors="replace")
            except FileNotFoundError:
                return ""

    def close(self) -> None:
        """Nothing to let go of: every call opens and closes its own connection."""

    def fail_orphans(self, heartbeat_timeout: float) -> list[str]:
        """Jobs left running by a process that died become failed, with the reason.

        Looked for with a read first; the write lock is taken only when one was found, and each is checked
        again under it (its runner may have finished it, or sent a heartbeat, in between)."""
        with self._connect() as db:
            if not _orphans(db, heartbeat_timeout):
                return []
        now = time.time()
        failed = []
        with self._write() as db:
            for row in _orphans(db, heartbeat_timeout):
                db.execute(
                    "UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status = ?",
                    (
                        FAILED,
                        now,
                        f"the service process running this job ({row['owner']}) stopped before it finished; "
                        "nothing was registered",
                        row["id"],
                        RUNNING,
                    ),
                )
                failed.append(row["id"])
        return failed


def _orphans(db: sqlite3.Connection, heartbeat_timeout: float) -> list[sqlite3.Row]:
    """Running jobs whose owner is a dead process of this host, or silent longer than `heartbeat_timeout`."""
    now = time.time()
    rows = db.execute("SELECT id, owner, heartbeat_at FROM jobs WHERE status = ?", (RUNNING,)).fetchall()
    return [
        row
        for row in rows
        if row["heartbeat_at"] is None or now - row["heartbeat_at"] > heartbeat_timeout or owner_is_dead(row["owner"])
    ]
