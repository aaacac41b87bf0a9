"""Past one machine, for real: lstm-serve replicas and lstm-worker processes each on a host of its own (a network
namespace with its own cache folder), sharing one store — versions, aliases and jobs in PostgreSQL, objects in S3 —
that they reach only over the network. A promotion under load, a PostgreSQL restart, S3 going away, jobs claimed by
two workers and a worker killed mid-job."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_store.locations import Store, open_store
from tests.conftest import save_tiny, wait_for
from tests.netns import Host, Network, available
from tests.postgres_server import PostgresServer
from tests.s3_server import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.skipif(available() is not None, reason=str(available()))]

PORT = 8000  # each host has its own addresses, so every replica takes the same port
# Polling a minute apart (the most LSTM_POLL_INTERVAL allows): a promotion seen within 2 s came by the NOTIFY.
POLL_INTERVAL = "60"
TINY_JOB: dict[str, Any] = {
    "hidden_size": 4,
    "num_layers": 1,
    "max_epochs": 2,
    "batch_size": 8,
    "seq_len": 16,
    "short_batch_size": 8,
}
ENDLESS_JOB = TINY_JOB | {"max_epochs": 100_000}
# The cheapest real job: one epoch of a tiny model on a small dataset of the request's own.
QUICK_JOB: dict[str, Any] = {"hidden_size": 2, "max_epochs": 1}
_X = [[[round(math.sin(0.3 * t + b), 6)] for b in range(4)] for t in range(30)]  # (30, 4, 1)
DATASET = {"inputs": _X, "targets": [[[0.5 * v[0]] for v in row] for row in _X]}
FINISHED = ("succeeded", "failed", "cancelled")
SAMPLE = {"inputs": [[[0.1]], [[0.2]], [[0.3]]]}
# The test process reaches the replicas over the bridge, not loopback: management routes need the token.
TOKEN = "scale-out-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOBS = 20  # shared by two workers, as the issue asks (each job cheap: one epoch, a tiny dataset)


@dataclass
class Cluster:
    """The shared backends on the bridge, and the hosts that use them."""

    network: Network
    postgres: PostgresServer
    s3: S3Server
    database_url: str
    location: str
    tmp: Path
    replicas: list[str] = field(default_factory=list)  # base URLs
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    opened: Store | None = None

    def environment(self, host: Host, **extra: str) -> dict[str, str]:
        cache = self.tmp / f"cache-{host.name}"
        return {
            **os.environ,
            **self.s3.environment(),
            "LSTM_DATABASE_URL": self.database_url,
            "LSTM_STORE_DIR": self.location,
            "LSTM_CACHE_DIR": str(cache),
            "LSTM_POLL_INTERVAL": POLL_INTERVAL,
            "LSTM_LOG_LEVEL": "info",
            "LSTM_S3_CONNECT_TIMEOUT": "2",
            "LSTM_S3_READ_TIMEOUT": "5",
            "LSTM_S3_ATTEMPTS": "1",
            "LSTM_API_TOKEN": TOKEN,
            "LSTM_JOB_PT2": "false",
            "LSTM_JOB_CONCURRENCY": "2",  # over both workers: each can run one at a time
            "LSTM_JOB_QUEUE_MAX": "100",  # the JOBS are queued at once
            **extra,
        }

    def store(self) -> Store:
        """The test process's own view of the shared store (another host's writer), opened once."""
        if self.opened is None:
            self.opened = open_store(self.location, self.database_url, self.tmp / "cache-test")
        return self.opened

    def start_replica(self, name: str) -> str:
        host = self.network.add_host(name)
        env = self.environment(host, LSTM_JOB_RUNNER="false")
        argv = [sys.executable, "-m", "service", "--host", host.address, "--port", str(PORT), "--workers", "1"]
        with (self.tmp / f"{name}.log").open("wb") as log:  # the child has its own copy of the descriptor
            self.processes[name] = host.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://{host.address}:{PORT}"
        process = self.processes[name]
        assert wait_for(lambda: _ready(url) or process.poll() is not None, timeout=180), self.log(name)
        assert process.poll() is None, self.log(name)
        self.replicas.append(url)
        return url

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        host = self.network.add_host(name)
        env = self.environment(host, LSTM_JOB_POLL_INTERVAL="0.2")
        argv = [sys.executable, "-m", "service.lstm_worker"]
        with (self.tmp / f"{name}.log").open("wb") as log:  # the child has its own copy of the descriptor
            process = host.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-4000:]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _serves(url: str, version: int) -> bool:
    return wait_for(lambda: _served_version(url) == version, timeout=60)


def _served_version(url: str) -> int | None:
    try:
        response = httpx.post(f"{url}/predict", json=SAMPLE, timeout=10)
    except httpx.HTTPError:
        return None
    return int(response.json()["version"]) if response.status_code == 200 else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("scale-out")
    with Network() as network, pytest.MonkeyPatch.context() as patch:
        postgres = PostgresServer(listen=(network.address,))
        postgres.start()
        s3 = S3Server(host=network.address)
        s3.start()
        for name, value in s3.environment().items():  # the test process writes to the store too
            patch.setenv(name, value)
        try:
            bucket = s3.create_bucket()
            made = Cluster(network, postgres, s3, postgres.create_database("scale"), f"s3://{bucket}/store", tmp)
            store = made.store()
            save_tiny(store, seed=1)
            save_tiny(store, seed=2)
            store.set_alias("lstm", "production", 1)
            made.start_replica("replica1")
            made.start_replica("replica2")
            yield made
        finally:
            for process in made.processes.values() if "made" in locals() else ():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in made.processes.values() if "made" in locals() else ():
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if "made" in locals() and made.opened is not None:
                made.opened.close()
            s3.close()
            postgres.close()


class Load:
    """Requests to every replica, back to back from one thread per replica, until stopped: what each answered."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.stopping = threading.Event()
        self.versions: dict[str, list[tuple[float, int]]] = {url: [] for url in urls}
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(url,), daemon=True) for url in urls]

    def _run(self, url: str) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stopping.is_set():
                try:
                    response = client.post(f"{url}/predict", json=SAMPLE)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{url}: {exc!r}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{url}: {response.status_code} {response.text[:200]}")
                    continue
                self.versions[url].append((time.monotonic(), int(response.json()["version"])))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def count(self) -> int:
        return sum(len(answers) for answers in self.versions.values())

    def first_answer_with(self, url: str, version: int) -> float | None:
        return next((at for at, seen in self.versions[url] if seen == version), None)


def _promote(cluster: Cluster, version: int) -> float:
    """Point production at `version` from the test process (another host's writer); when it was committed."""
    cluster.store().set_alias("lstm", "production", version)
    return time.monotonic()


def test_a_promotion_reaches_every_replica_under_load_with_no_failed_request(cluster: Cluster) -> None:
    assert all(_serves(url, 1) for url in cluster.replicas)
    with Load(cluster.replicas) as load:
        assert wait_for(lambda: all(load.versions[url] for url in cluster.replicas), timeout=60)
        promoted = _promote(cluster, 2)
        # Far below the poll interval (a minute): the NOTIFY brought it. The measured delay is printed.
        assert wait_for(lambda: all(load.first_answer_with(url, 2) for url in cluster.replicas), timeout=60)
        delays = [load.first_answer_with(url, 2) - promoted for url in cluster.replicas]  # type: ignore[operator]
        seen = load.count()
        assert wait_for(lambda: load.count() > seen + 10, timeout=60), "the load goes on after the swap"
    print(f"promotion served by every replica after {max(delays):.3f} s (per replica: {delays})")
    assert load.failures == []
    for url in cluster.replicas:
        after = [version for at, version in load.versions[url] if at > promoted + max(delays)]
        assert set(after) == {2}, f"{url} went back to an older version"
    _promote(cluster, 1)
    assert all(_serves(url, 1) for url in cluster.replicas)


def test_a_postgresql_restart_under_load_fails_no_request_and_notifications_resume(cluster: Cluster) -> None:
    with Load(cluster.replicas) as load:
        assert wait_for(lambda: load.count() > 10, timeout=60)
        cluster.postgres.stop()
        try:
            seen = load.count()
            assert wait_for(lambda: load.count() > seen + 20, timeout=60), "serving goes on from what is loaded"
        finally:
            cluster.postgres.start()
        # Each replica's listener reconnects: a promotion after the restart arrives without the poll.
        promoted = _promote(cluster, 2)
        assert wait_for(lambda: all(load.first_answer_with(url, 2) for url in cluster.replicas), timeout=90), [
            cluster.log(name) for name in ("replica1", "replica2")
        ]
    print(f"after the restart, promotion served after {time.monotonic() - promoted:.3f} s at most")
    assert load.failures == []
    _promote(cluster, 1)
    assert all(_serves(url, 1) for url in cluster.replicas)


def _wait_job(url: str, job_id: str, until: tuple[str, ...] = FINISHED, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/train/{job_id}", headers=AUTH, timeout=30).json()
        if job["status"] in until and (until != ("running",) or job["progress"]["epoch"] > 0):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach {until}: {job}")


def _submit(url: str, params: dict[str, Any], dataset: dict[str, Any] | None = None) -> str:
    body = {"params": params, "promote": "never"} | ({"dataset": dataset} if dataset else {})
    response = httpx.post(f"{url}/train", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_two_workers_on_hosts_of_their_own_run_each_job_exactly_once(cluster: Cluster) -> None:
    workers = [cluster.start_worker("worker1"), cluster.start_worker("worker2")]
    store = cluster.store()
    before = set(store.versions("lstm"))
    # Queued on both replicas alike: one queue.
    jobs = [_submit(cluster.replicas[i % 2], QUICK_JOB, DATASET) for i in range(JOBS)]
    done = [_wait_job(cluster.replicas[0], job) for job in jobs]
    assert [job["status"] for job in done] == ["succeeded"] * JOBS, [job.get("error") for job in done]
    published = set(store.versions("lstm")) - before
    versions = [job["result"]["version"] for job in done]
    # A job run twice would have published twice: one new version per job, each one job's.
    assert sorted(versions) == sorted(published) and len(published) == JOBS
    # Each job started once over both workers' logs (lstm-worker logs "job ID started (pid N)").
    logs = [(cluster.tmp / f"{name}.log").read_text(errors="replace") for name in ("worker1", "worker2")]
    starts = {job: sum(log.count(f"job {job} started") for log in logs) for job in jobs}
    assert set(starts.values()) == {1}, starts
    print(f"jobs started per worker: {[sum(log.count(f'job {job} started') for job in jobs) for log in logs]}")
    assert all(worker.poll() is None for worker in workers)
    for version in published:
        store.delete("lstm", version)


def test_a_worker_killed_mid_job_leaves_it_failed_and_nothing_half_published(cluster: Cluster) -> None:
    if "worker1" not in cluster.processes:
        cluster.start_worker("worker1")
    victim = cluster.processes["worker1"]
    for name, process in cluster.processes.items():  # one worker only, so the victim takes the job
        if name.startswith("worker") and name != "worker1" and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    store = cluster.store()
    before = set(store.versions("lstm"))
    job = _submit(cluster.replicas[0], ENDLESS_JOB)
    _wait_job(cluster.replicas[0], job, until=("running",))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    # The job's trainer dies with its worker; a live worker then sees the heartbeat stop.
    cluster.processes.pop("worker1")
    survivor = cluster.start_worker("worker3")
    failed = _wait_job(cluster.replicas[0], job, timeout=600)
    assert failed["status"] == "failed", failed
    assert failed["error"], "the reason is recorded"
    assert set(store.versions("lstm")) == before
    assert survivor.poll() is None


def test_s3_unreachable_serving_goes_on_and_training_fails_with_the_reason(cluster: Cluster) -> None:
    if not any(name.startswith("worker") and p.poll() is None for name, p in cluster.processes.items()):
        cluster.start_worker("worker4")
    with Load(cluster.replicas) as load:
        assert wait_for(lambda: load.count() > 10, timeout=60)
        cluster.s3.stop()
        try:
            seen = load.count()
            assert wait_for(lambda: load.count() > seen + 20, timeout=60), "serving goes on"
            job = _submit(cluster.replicas[1], TINY_JOB)
            failed = _wait_job(cluster.replicas[1], job, timeout=600)
        finally:
            cluster.s3.start()
    assert load.failures == []
    assert failed["status"] == "failed", failed
    assert "s3://" in failed["error"], failed["error"]
