"""The training-job gauges of /metrics, read from the job database when /metrics is scraped."""

from __future__ import annotations

import logging

import model_store
from service import metrics
from service.conditions import Condition
from service.job_queue import JobQueue

log = logging.getLogger("service.job_gauges")


class JobGauges:
    """Publishes the job counts per state, and whether the job database can be read."""

    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs
        self.jobs_trouble = Condition(log, "cannot read the training-job database for /metrics")

    def publish_jobs(self) -> None:
        """The job gauges for /metrics; when the job database cannot be read, lstm_jobs_database_up says so."""
        try:
            counts = self.jobs.counts()
        except model_store.StorageError as exc:
            metrics.JOBS_DATABASE_UP.set(0)
            self.jobs_trouble.failing(str(exc))
            return
        metrics.JOBS_DATABASE_UP.set(1)
        self.jobs_trouble.ok()
        for state, count in counts.items():
            metrics.JOBS.labels(state).set(count)
