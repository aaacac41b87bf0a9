"""open_job_queue: the training-job backend the settings name (SQLite in the store folder, or PostgreSQL)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from model_store.postgres import is_postgres_url
from service.config import Settings
from service.job_queue import JobQueue
from service.jobs import JobStore
from service.pg_jobs import PgJobQueue

WORK_DIR = "lstm-jobs"  # in the system's temporary folder, unless LSTM_JOB_WORK_DIR says where


def work_dir(settings: Settings) -> Path:
    """Where a runner of the PostgreSQL queue keeps its running jobs' datasets and logs, on its own host."""
    return settings.job_work_dir or Path(tempfile.gettempdir()) / WORK_DIR


def open_job_queue(settings: Settings) -> JobQueue:
    """JobStore in the store folder without a database URL (the embedded default); PgJobQueue with one."""
    if settings.database_url:
        if not is_postgres_url(settings.database_url):
            raise ValueError("LSTM_DATABASE_URL must be a postgresql:// URL (or unset: SQLite in the store folder)")
        return PgJobQueue(settings.database_url, work_dir(settings), settings.job_log_tail_bytes)
    return JobStore(str(settings.store_dir))
