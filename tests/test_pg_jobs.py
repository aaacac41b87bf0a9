"""The training-job queue over PostgreSQL: the JobQueue contract (against SQLite too), lstm-worker processes on it."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

import model_store
from benchmarks import harness
from model_store.locations import open_store
from service.errors import BusyError, ConflictError
from service.job_queue import JobQueue
from service.jobs import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, SUCCEEDED, JobNotFoundError, JobStore
from service.pg_jobs import PgJobQueue
from tests.conftest import make_client, wait_for
from tests.postgres_server import PostgresServer

REPO = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1
DEAD_PID = 2**22 + 12345  # above the kernel's pid_max default, so never alive
# The cheapest real training: the tutorial preset on a tiny dataset of the job's own, one small layer.
QUICK = {"hidden_size": 2, "max_epochs": 1}
ENDLESS = {"hidden_size": 2, "max_epochs": 100_000}
DATASET = (np.linspace(0, 1, 80, dtype=np.float32).reshape(20, 4, 1), np.ones((20, 4, 1), np.float32))


@pytest.fixture(params=["sqlite", "postgresql"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobQueue]:
    """Each backend of the JobQueue contract: the store folder's SQLite, and a fresh PostgreSQL database."""
    jobs: JobQueue
    if request.param == "sqlite":
        jobs = JobStore(tmp_path / "store")
    else:
        jobs = PgJobQueue(request.getfixturevalue("database_url"), tmp_path / "work", log_tail_bytes=4096)
    try:
        yield jobs
    finally:
        jobs.close()


def create(jobs: JobQueue, queue_max: int = 100, **fields: Any) -> str:
    return jobs.create(
        model="lstm", preset="tutorial", promote="never", params={}, max_epochs=5, queue_max=queue_max, **fields
    ).id


def test_admission_refuses_past_queue_max_and_a_claimed_job_has_its_dataset(queue: JobQueue) -> None:
    first = create(queue, queue_max=2, dataset={"shape": [20, 4, 1]}, arrays=DATASET)
    create(queue, queue_max=2)
    with pytest.raises(BusyError, match="2 jobs waiting"):
        create(queue, queue_max=2)
    claimed = queue.claim("host-a:1", concurrency=1)
    assert claimed is not None and claimed.id == first and claimed.dataset == {"shape": [20, 4, 1]}
    with np.load(queue.job_dir(first) / "dataset.npz") as data:  # on the runner's side, as lstm-train reads it
        assert np.array_equal(data["inputs"], DATASET[0]) and np.array_equal(data["targets"], DATASET[1])
    create(queue, queue_max=2)  # one place freed by the claim
    assert queue.counts() == {QUEUED: 2, RUNNING: 1, SUCCEEDED: 0, FAILED: 0, CANCELLED: 0}


def test_claims_go_oldest_first_and_the_concurrency_cap_holds_over_every_runner(queue: JobQueue) -> None:
    ids = [create(queue) for _ in range(3)]
    first, second = queue.claim("host-a:1", 2), queue.claim("host-b:1", 2)
    assert first is not None and second is not None and [first.id, second.id] == ids[:2]
    assert first.status == RUNNING and first.owner == "host-a:1" and second.owner == "host-b:1"
    assert queue.claim("host-c:1", 2) is None  # two run, on two runners: the third waits
    queue.finish(first.id, SUCCEEDED, result={"version": 1})
    third = queue.claim("host-c:1", 2)
    assert third is not None and third.id == ids[2]


def test_runners_racing_for_jobs_each_get_different_ones(queue: JobQueue) -> None:
    ids = {create(queue) for _ in range(24)}
    claimed: list[str] = []
    start = threading.Barrier(6)

    def runner(number: int) -> None:
        start.wait()
        while (job := queue.claim(f"host-{number}:1", concurrency=100)) is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=runner, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)  # each once: none twice, none left


def test_orphans_of_a_dead_process_or_a_silent_runner_fail_with_the_reason(queue: JobQueue) -> None:
    dead, silent, alive = create(queue), create(queue), create(queue)
    queue.claim(f"{socket.gethostname()}:{DEAD_PID}", 3)  # a process of this host that is gone
    queue.claim("another-host:1", 3)  # another host: only its heartbeat can tell
    queue.claim("another-host:2", 3)
    assert queue.fail_orphans(heartbeat_timeout=60) == [dead]
    time.sleep(2.5)
    assert queue.heartbeat("another-host:2") == []  # alive: it beats
    assert queue.fail_orphans(heartbeat_timeout=2) == [silent]
    shown = queue.get_many([dead, silent, alive])
    assert shown[dead].status == FAILED and "stopped before it finished" in (shown[dead].error or "")
    assert shown[silent].status == FAILED and shown[silent].error
    assert shown[alive].status == RUNNING
    assert queue.fail_orphans(heartbeat_timeout=60) == []


def test_cancel_ends_a_queued_job_at_once_and_flags_a_running_one_for_its_runner(queue: JobQueue) -> None:
    running, waiting = create(queue), create(queue)
    queue.claim("host-a:1", 1)
    assert queue.request_cancel(waiting).status == CANCELLED
    flagged = queue.request_cancel(running)
    assert flagged.status == RUNNING and flagged.cancel_requested
    assert queue.heartbeat("host-b:1") == [] and queue.heartbeat("host-a:1") == [running]
    done = queue.finish(running, CANCELLED, error="cancelled while running")
    assert done.status == CANCELLED and done.finished_at is not None
    with pytest.raises(ConflictError, match="already finished"):
        queue.request_cancel(running)
    with pytest.raises(JobNotFoundError, match="not found"):
        queue.request_cancel("no-such-job")


def test_reads_page_newest_first_and_count_every_state(queue: JobQueue) -> None:
    ids = [create(queue) for _ in range(5)]
    page, total = queue.page(limit=2, offset=1)
    assert total == 5 and [job.id for job in page] == [ids[3], ids[2]]
    assert set(queue.get_many([ids[0], "no-such-job", ids[0]])) == {ids[0]}
    assert queue.get_many([]) == {}
    with pytest.raises(JobNotFoundError):
        queue.get("x" * 60_000)
    assert queue.counts() == {QUEUED: 5, RUNNING: 0, SUCCEEDED: 0, FAILED: 0, CANCELLED: 0}


def test_the_log_tail_is_the_end_of_train_log_and_bounded(queue: JobQueue) -> None:
    job = create(queue)
    assert queue.log_tail(job, 100) == ""
    claimed = queue.claim("host-a:1", 1)
    assert claimed is not None
    queue.job_dir(job).mkdir(parents=True, exist_ok=True)  # as the runner makes it
    (queue.job_dir(job) / "train.log").write_text("start\n" + "x" * 5000 + "\nthe end\n")
    queue.progress(job, 1, 5, 0.5)  # a runner on another host stores the tail with each progress
    assert queue.log_tail(job, 100).endswith("x\nthe end\n") and len(queue.log_tail(job, 100)) == 100
    queue.finish(job, FAILED, error="it failed")
    assert queue.log_tail(job, 10) == "x\nthe end\n"  # the last 10 bytes, after the end too
    with pytest.raises(JobNotFoundError):
        queue.log_tail("no-such-job", 10)


def row_versions(url: str) -> list[tuple[object, ...]]:
    """Every row of the job tables with its xmin and ctid: any write to a row (even one that changes nothing)
    gives it a new version."""
    with psycopg.connect(url) as conn:
        jobs = conn.execute("SELECT id, xmin::text, ctid::text FROM lstm_jobs ORDER BY id").fetchall()
        schema = conn.execute("SELECT component, version, xmin::text, ctid::text FROM lstm_schema").fetchall()
    return jobs + schema


def test_an_idle_postgres_queue_costs_reads_only(database_url: str, tmp_path: Path) -> None:
    jobs = PgJobQueue(database_url, tmp_path / "work", 4096)
    try:
        done = create(jobs)
        jobs.claim("another-host:1", 1)
        jobs.finish(done, FAILED, error="finished before the service started")  # history, nothing due
        store = model_store.ModelStore(tmp_path / "store")
        open_store(store.root, database_url).close()  # the catalog's schema: written once, by whoever opens it first
        before = row_versions(database_url)
        with make_client(store, database_url=database_url, job_poll_interval=0.05, job_work_dir=tmp_path) as client:
            time.sleep(1.0)  # twenty of the runner's polls, each a claim and an orphan check
            assert client.get("/train").json()["total"] == 1
            assert client.get(f"/train/{done}").json()["status"] == FAILED
            assert client.get(f"/train/{done}/logs").status_code == 200
        for _ in range(5):
            assert jobs.claim("host-a:1", 1) is None and jobs.fail_orphans(1.0) == []
        assert row_versions(database_url) == before
    finally:
        jobs.close()


def preexec_die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Worker:
    """An lstm-worker process on a PostgreSQL queue (killed with the test), its output in a log file."""

    def __init__(self, url: str, store: Path, log: Path, *options: str, hostname: str | None = None) -> None:
        command = [
            sys.executable, "-m", "service.lstm_worker", "--store", str(store), "--database-url", url,
            "--job-poll-interval", "0.1", "--job-work-dir", str(log.with_suffix(".work")), "--no-job-pt2", *options,
        ]  # fmt: skip
        if hostname is not None:  # another host, as far as owners go: a UTS namespace of its own
            command = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *command]
        environment = {key: value for key, value in os.environ.items() if not key.startswith("LSTM_")}
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=REPO,
                preexec_fn=preexec_die_with_parent,
            )  # fmt: skip
        assert wait_for(lambda: "job runner" in self.text() or self.process.poll() is not None, 120), self.text()
        assert self.process.poll() is None, self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def submit(jobs: PgJobQueue, params: dict[str, Any], promote: str = "never") -> str:
    """A job as POST /train queues it, with its own tiny dataset."""
    return jobs.create(
        model="lstm",
        preset="tutorial",
        promote=promote,
        params=params,
        max_epochs=int(params["max_epochs"]),
        queue_max=1000,
        dataset={"shape": list(DATASET[0].shape)},
        arrays=DATASET,
    ).id


def wait_status(jobs: JobQueue, job_id: str, until: tuple[str, ...] = FINISHED, timeout: float = 600) -> Any:
    assert wait_for(lambda: jobs.get(job_id).status in until, timeout), jobs.get(job_id)
    return jobs.get(job_id)


def wait_training(jobs: JobQueue, job_id: str) -> Any:
    """Until the job runs and has finished an epoch (its training process is under way)."""
    assert wait_for(lambda: jobs.get(job_id).epoch > 0 or jobs.get(job_id).finished, 600), jobs.get(job_id)
    job = jobs.get(job_id)
    assert job.status == RUNNING, job
    return job


def training_children(worker: Worker) -> list[int]:
    return [pid for pid in harness.children(worker.process.pid) if "training" in harness.cmdline(pid)]


def versions(store: Path, url: str) -> list[int]:
    """The versions a worker's training published: rows in the database, files in the store folder."""
    opened = open_store(store, url)
    try:
        return opened.versions("lstm")
    except model_store.StoreError:
        return []
    finally:
        opened.close()


@pytest.fixture
def pg_queue(database_url: str, tmp_path: Path) -> Iterator[PgJobQueue]:
    """The queue as a replica sees it (the test submits and reads through it)."""
    jobs = PgJobQueue(database_url, tmp_path / "replica", 4096)
    try:
        yield jobs
    finally:
        jobs.close()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["this host", "another host"])
def test_kill_9_of_a_worker_mid_job_fails_the_job_with_a_reason_and_registers_nothing(
    database_url: str, pg_queue: PgJobQueue, tmp_path: Path, workers: list[Worker], where: str
) -> None:
    store = tmp_path / "store"
    hostname = None
    if where == "another host":
        if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode != 0:
            pytest.skip("unshare --uts (a hostname of its own for the worker) is not permitted here")
        hostname = "pgjobs-other-host"
    victim = Worker(database_url, store, tmp_path / "victim.log", hostname=hostname)
    workers.append(victim)
    job_id = submit(pg_queue, ENDLESS, promote="always")
    assert wait_training(pg_queue, job_id).owner.startswith(f"{hostname or socket.gethostname()}:")
    training = training_children(victim)
    assert training, "no training process under the worker"
    victim.process.kill()
    victim.process.wait()
    assert wait_for(lambda: all(harness.gone(pid) for pid in training), 60)  # it died with its worker
    # Another worker (here: on this host) fails it: at once for a dead process of its host, after the heartbeat
    # timeout for one of another host, whose pid it cannot check.
    workers.append(Worker(database_url, store, tmp_path / "other.log", "--job-heartbeat-timeout", "3"))
    failed = wait_status(pg_queue, job_id, timeout=120)
    assert failed.status == FAILED, failed
    expected = "stopped before it finished" if hostname is None else "sent no heartbeat for over 3 s"
    assert expected in (failed.error or ""), failed.error
    assert versions(store, database_url) == []  # nothing half-registered, nothing registered


@pytest.mark.slow
def test_a_worker_waiting_through_a_postgres_restart_runs_the_next_job(tmp_path: Path, workers: list[Worker]) -> None:
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database("restart")
        jobs = PgJobQueue(url, tmp_path / "replica", 4096)
        try:
            worker = Worker(url, tmp_path / "store", tmp_path / "worker.log")
            workers.append(worker)
            server.stop()
            with pytest.raises(model_store.StorageError, match="training-job database.*failed"):
                jobs.counts()  # what the routes answer 503, naming it
            assert wait_for(lambda: "job runner paused" in worker.text(), 60), worker.text()
            time.sleep(1.0)  # a few more failing polls
            server.start()  # the same port and data
            job_id = submit(jobs, QUICK)
            done = wait_status(jobs, job_id)
            assert done.status == SUCCEEDED and done.owner == f"{socket.gethostname()}:{worker.process.pid}", done
            assert worker.process.poll() is None
            log = worker.text()
            assert "recovered" in log and "Traceback" not in log and "error connecting" not in log, log
        finally:
            jobs.close()
    finally:
        server.close()


@pytest.mark.slow
def test_a_cancel_from_a_replica_reaches_the_worker_running_the_job(
    database_url: str, pg_queue: PgJobQueue, tmp_path: Path, workers: list[Worker]
) -> None:
    store = tmp_path / "store"
    worker = Worker(database_url, store, tmp_path / "worker.log")
    workers.append(worker)
    job_id = submit(pg_queue, ENDLESS, promote="always")
    wait_training(pg_queue, job_id)
    training = training_children(worker)
    assert training
    assert pg_queue.request_cancel(job_id).cancel_requested
    cancelled = wait_status(pg_queue, job_id, timeout=60)
    assert cancelled.status == CANCELLED and "cancelled while running" in (cancelled.error or ""), cancelled
    assert wait_for(lambda: all(harness.gone(pid) for pid in training), 30)
    assert versions(store, database_url) == [] and worker.process.poll() is None


@pytest.mark.slow
def test_lstm_serve_with_a_database_url_runs_jobs_unless_told_not_to_and_shows_logs_from_the_row(
    database_url: str, pg_queue: PgJobQueue, tmp_path: Path
) -> None:
    store = model_store.ModelStore(tmp_path / "store")
    # A job whose lstm-train exits at once with an error on its stderr (train.log); the route would refuse it.
    bad = submit(pg_queue, {"max_epochs": 1, "no_such_flag": 1})
    with make_client(store, database_url=database_url, job_runner=False, job_poll_interval=0.05) as client:
        time.sleep(1.0)
        assert client.get(f"/train/{bad}").json()["status"] == QUEUED  # LSTM_JOB_RUNNER=false: not run here
    work = tmp_path / "work"
    with make_client(store, database_url=database_url, job_poll_interval=0.05, job_work_dir=work) as client:
        assert wait_for(lambda: client.get(f"/train/{bad}").json()["status"] in FINISHED, 300)
        shown = client.get(f"/train/{bad}").json()
        assert shown["status"] == FAILED and "unrecognized arguments: --no-such-flag" in shown["error"], shown
    # Another replica, whose host never saw the job's folder, shows the log from the row.
    with make_client(model_store.ModelStore(tmp_path / "other"), database_url=database_url, job_runner=False) as other:
        logs = other.get(f"/train/{bad}/logs")
        assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
        assert "lstm-train: error: unrecognized arguments" in logs.text
        assert other.get("/train/no-such-job/logs").status_code == 404
    assert work.is_dir() and list(work.iterdir()) == []  # the runner's folder for the job went with it
