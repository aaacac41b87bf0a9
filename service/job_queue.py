"""JobQueue: what the /train routes, the job runner and the event hub need of a training-job backend.

`service.jobs.JobStore` (SQLite in the store folder) is the embedded default; `service.pg_jobs.PgJobQueue` implements
it over PostgreSQL, with `lstm-worker` processes on any host as the runners (service/job_backends.py chooses).

The contract every implementation keeps:
- `create` refuses (BusyError) once `queue_max` jobs wait; a job is never queued without its dataset;
- `claim` hands each queued job to exactly one caller, oldest first, and never lets more than `concurrency`
  jobs run at once over every runner;
- a job left running by a runner that died (its process is gone, or its heartbeat is older than the timeout)
  becomes failed with a reason on the next `fail_orphans`;
- reading never writes, and the runner's calls write only when there is something to write: an idle queue
  (nothing queued, nothing running) costs reads only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from service.jobs import Job


class JobQueue(Protocol):
    """A training-job backend: admission, claims, progress, outcomes and cancellation."""

    def job_dir(self, job_id: str) -> Path:
        """Where the job's dataset and train.log live (on the runner's file system)."""
        ...

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
        """Queue a job, or raise BusyError when `queue_max` jobs already wait."""
        ...

    def get(self, job_id: str) -> Job:
        """One job; JobNotFoundError when there is none with that id."""
        ...

    def get_many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        """The jobs of `job_ids` that exist, by id, in one read."""
        ...

    def page(self, limit: int, offset: int) -> tuple[list[Job], int]:
        """A page of jobs, newest first, and the total count."""
        ...

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state (every state present)."""
        ...

    def claim(self, owner: str, concurrency: int) -> Job | None:
        """The oldest queued job, now running for `owner`, if fewer than `concurrency` run anywhere."""
        ...

    def heartbeat(self, owner: str) -> list[str]:
        """Mark `owner`'s running jobs alive; the ids among them whose cancellation was requested."""
        ...

    def progress(self, job_id: str, epoch: int, max_epochs: int, loss: float) -> None:
        """Record a running job's progress."""
        ...

    def finish(
        self, job_id: str, status: str, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> Job:
        """Record how a running job ended."""
        ...

    def request_cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or flag a running one for its runner; ConflictError once finished."""
        ...

    def fail_orphans(self, heartbeat_timeout: float) -> list[str]:
        """Jobs left running by a runner that died become failed, with the reason; their ids."""
        ...

    def log_tail(self, job_id: str, limit: int) -> str:
        """The last `limit` bytes of the job's train.log, from any replica ('' before it started)."""
        ...

    def close(self) -> None:
        """Let go of connections (the end of the process that opened the queue)."""
        ...
