"""The lstm-worker command: runs the training jobs of a store's queue in a process of its own, until SIGTERM.

With LSTM_DATABASE_URL (or --database-url) the queue is PostgreSQL's (service/pg_jobs.py): any number of
lstm-worker processes on any hosts claim each job exactly once, within LSTM_JOB_CONCURRENCY over all of them; a
worker killed mid-job leaves a job that the next runner's check (any worker's, or a starting lstm-serve's) fails
with the reason, at once on the same host, after LSTM_JOB_HEARTBEAT_TIMEOUT from another. Without it, the
store folder's SQLite queue, shared by the processes of one host.

`lstm-serve --workers N` (N > 1) runs one as its job-runner process (service/supervisor.py), so a
lstm-serve has one runner whatever its worker count. On SIGTERM or SIGINT the runner stops: its training
processes are killed and their jobs become failed, with the reason. A succeeded job's version reaches
the serving workers through their store poll (LSTM_POLL_INTERVAL).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from service.config import FLAGS as SERVE_FLAGS
from service.config import Settings
from service.job_backends import open_job_queue
from service.job_queue import JobQueue
from service.job_runner import JobRunner, RunnerSettings, running
from service.logs import configure
from service.pg_jobs import PgJobQueue
from training.settings_cli import add_flags, settings_from
from training.store_settings import StoreSettings

log = logging.getLogger("service.lstm_worker")
# lstm-serve's flags that a runner uses: the store's (where it is, its database, S3's limits), the jobs' settings
# and the log's.
FLAGS = [
    flag
    for flag in SERVE_FLAGS
    if flag.field != "job_runner"
    and (flag.field in StoreSettings.model_fields or flag.field.startswith(("job_", "log_")))
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstm-worker",
        description="Run the training jobs queued in a store (POST /train of any lstm-serve on it), or with "
        "--database-url in PostgreSQL, from any host. It takes "
        "lstm-serve's settings, as flags or LSTM_ variables (LSTM_JOB_* are the ones it uses, see the README); "
        "a flag given overrides its variable.",
    )
    add_flags(parser, Settings, FLAGS)
    # lstm-serve --workers N hands its resolved settings to its job runner as JSON on stdin (not the command
    # line, which every user sees in ps); not for people.
    parser.add_argument("--settings-on-stdin", action="store_true", help=argparse.SUPPRESS)
    return parser


async def _nothing() -> None:
    """After a job succeeded: nothing to refresh here; serving processes see the version on their store poll."""


async def run(settings: Settings) -> int:
    """Run jobs until SIGTERM or SIGINT; 0 once the runner has stopped and recorded its jobs."""
    try:
        jobs = await asyncio.to_thread(open_job_queue, settings)
    except ValueError as exc:  # e.g. a database URL that is not PostgreSQL's
        print(f"lstm-worker: error: {exc}", file=sys.stderr)
        return 2
    runner = JobRunner(
        jobs, settings.store_dir, RunnerSettings.from_settings(settings), _nothing, reach_flags=settings.reach_flags()
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running(runner):
            log.info("job runner %s running the jobs of %s", runner.owner, describe(jobs, settings))
            await stop.wait()
            log.info("job runner stopping: its running jobs are stopped and marked failed")
    finally:
        await asyncio.to_thread(jobs.close)
    return 0


def describe(jobs: JobQueue, settings: Settings) -> str:
    """Whose jobs these are, for the log: the PostgreSQL database (password hidden), else the store folder."""
    if isinstance(jobs, PgJobQueue):
        return f"{jobs.describe()} (store {settings.store_dir})"
    return str(settings.store_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.settings_on_stdin:
        try:
            settings = Settings.model_validate_json(sys.stdin.buffer.read())  # the supervisor strips LSTM_ variables
        except ValueError as exc:
            print(f"lstm-worker: error: settings on stdin: {exc}", file=sys.stderr)
            return 2
    else:
        settings = settings_from(Settings, parser, args, FLAGS)  # a bad value: exit 2
    try:
        configure(settings.log_level, settings.log_format)
    except ValueError as exc:  # logging names no such level
        print(f"lstm-worker: error: LSTM_LOG_LEVEL {settings.log_level!r}: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
