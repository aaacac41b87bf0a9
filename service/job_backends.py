"""open_job_queue: the training-job backend the settings name (SQLite in the store folder, or PostgreSQL)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from service.config import Settings
from service.job_queue import JobQueue
from service.jobs import JobStore
from service.pg_jobs import PgJobQueue
from training.store_settings import NEEDS_DATABASE

WORK_DIR = "lstm-jobs"  # in the system's temporary folder, unless LSTM_JOB_WORK_DIR says where


def work_dir(settings: Settings) -> Path:
    """Where a runner of the PostgreSQL queue keeps its running jobs' datasets and logs, on its own host."""
    return settings.job_work_dir or Path(tempfile.gettempdir()) / WORK_DIR


def open_job_queue(settings: Settings) -> JobQueue:
    """JobStore in the store folder without a database URL (the embedded default); PgJobQueue with one."""
    if settings.database_url:  # a postgresql:// one: Settings refuses any other
        return PgJobQueue(settings.database_url, work_dir(settings), settings.job_log_tail_bytes)
    folder = settings.store_folder
    if folder is None:  # Settings refuses an s3:// store without a database too; said again for other callers
        raise ValueError(NEEDS_DATABASE)
    return JobStore(folder)
