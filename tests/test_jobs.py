"""Training jobs through the real app: submit, progress, cancel, limits, datasets, promotion, restarts."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

import model_store
from benchmarks import harness
from service.job_schemas import TrainJob, TrainJobPage
from service.jobs import RUNNING, Job, JobStore
from tests.conftest import REMOTE, make_client, save_tiny

pytestmark = pytest.mark.slow

TINY: dict[str, Any] = {
    "hidden_size": 6,
    "num_layers": 1,
    "max_epochs": 30,
    "batch_size": 8,
    "seq_len": 16,
    "short_batch_size": 8,
}
ENDLESS = TINY | {"max_epochs": 100_000}
FINISHED = ("succeeded", "failed", "cancelled")


def wait_job(
    client: TestClient, job_id: str, until: tuple[str, ...] = FINISHED, timeout: float = 600
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/train/{job_id}").json()
        if job["status"] in until and (until != ("running",) or job["progress"]["epoch"] > 0):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {until}: {job}")


def training_processes(store_dir: Path) -> list[int]:
    """Pids of lstm-train processes working on `store_dir`."""
    return harness.find_processes("training", str(store_dir))


def fake_trainer(monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Make the runner start `python -c script` instead of lstm-train (still found by training_processes)."""

    def command(job: Job, store_dir: Path, torch_threads: int, dataset_path: Path | None, *_: object) -> list[str]:
        return [sys.executable, "-c", script, "training", str(store_dir)]

    monkeypatch.setattr("service.job_runner.training_command", command)


@pytest.fixture
def jobs_client(store: model_store.ModelStore) -> Any:
    with make_client(store, job_poll_interval=0.1) as client:
        yield client


def test_submitted_job_trains_registers_and_is_served(jobs_client: TestClient, store: model_store.ModelStore) -> None:
    response = jobs_client.post("/train", json={"params": TINY})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/train/{job['id']}"
    assert job["status"] == "queued" and job["params"]["hidden_size"] == 6
    done = wait_job(jobs_client, job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["epoch"] == 30 and done["progress"]["max_epochs"] == 30
    result = done["result"]
    assert result["version"] == 1 and result["promoted"] is True and "worst_mse" in result["metrics"]
    assert store.versions("lstm") == [1]
    # The version is in /models at once and served by this worker immediately.
    assert jobs_client.get("/models").json()["models"][0]["serving_version"] == 1
    assert jobs_client.post("/predict", json={"inputs": [[[0.5]]]}).json()["version"] == 1
    listing = jobs_client.get("/train").json()
    assert listing["total"] == 1 and listing["jobs"][0]["id"] == job["id"]
    assert 'lstm_training_jobs{state="succeeded"} 1.0' in jobs_client.get("/metrics").text


def test_cancel_running_job_kills_its_process_and_registers_nothing(
    jobs_client: TestClient, store: model_store.ModelStore
) -> None:
    job = jobs_client.post("/train", json={"params": ENDLESS}).json()
    wait_job(jobs_client, job["id"], until=("running",))
    assert training_processes(store.root)
    response = jobs_client.delete(f"/train/{job['id']}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled", response.json()
    assert "nothing was registered" in response.json()["error"]
    deadline = time.monotonic() + 5
    while training_processes(store.root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert training_processes(store.root) == []
    assert store.versions("lstm") == []
    again = jobs_client.delete(f"/train/{job['id']}")
    assert again.status_code == 409 and "already finished" in again.json()["error"]


def test_full_queue_answers_429_and_queued_job_cancels_at_once(store: model_store.ModelStore) -> None:
    with make_client(store, job_poll_interval=0.1, job_queue_max=1) as client:
        running = client.post("/train", json={"params": ENDLESS}).json()
        wait_job(client, running["id"], until=("running",))
        queued = client.post("/train", json={"params": TINY})
        assert queued.status_code == 202
        full = client.post("/train", json={"params": TINY})
        assert full.status_code == 429 and "queue is full" in full.json()["error"]
        cancelled = client.delete(f"/train/{queued.json()['id']}").json()
        assert cancelled["status"] == "cancelled" and cancelled["started_at"] is None
        assert client.delete(f"/train/{running['id']}").json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"params": {"hidden_size": 0}}, "hidden_size from 1 to 512"),
        ({"params": {"hidden_size": 100_000}}, "hidden_size from 1 to 512"),
        ({"params": {"max_epochs": 10**9}}, "max_epochs from 1 to 100000"),
        ({"params": {"lr": -1}}, "lr from 1e-06 to 1"),
        ({"params": {"num_layers": 2.5}}, "integer"),
        ({"params": {"seed": "x"}}, "must be a number"),
        ({"params": {"seed": True}}, "must be a number"),
        ({"params": {"dropout": 0.5}}, "unknown hyper-parameter"),
        ({"preset": "huge"}, "preset"),
        ({"promote": "sometimes"}, "promote"),
        ({"model": "../x"}, "model"),
        ({"extra": 1}, "Extra inputs"),
        ({"dataset": {"inputs": [[[1.0]]]}}, "expected exactly 'inputs' and 'targets'"),
        ({"dataset": {"inputs": [[[1.0]], [[2.0]]], "targets": [[[1.0]]]}}, "same shape"),
        ({"dataset": {"inputs": [[[1.0], [2.0]], [[1.0]]], "targets": [[[1.0]], [[1.0]]]}}, "ragged"),
        ({"dataset": {"inputs": [[["a"]], [[1.0]]], "targets": [[[1.0]], [[1.0]]]}}, "a string"),
        ({"dataset": {"inputs": [[[1.0]]], "targets": [[[1.0]]]}}, "at least 2"),
    ],
)
def test_bad_training_requests_are_422_naming_the_problem(
    jobs_client: TestClient, body: dict[str, Any], fragment: str
) -> None:
    response = jobs_client.post("/train", json=body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]
    assert jobs_client.get("/train").json()["total"] == 0


def test_a_queued_job_already_has_its_dataset_on_disk(jobs_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # A runner may claim a job the instant its row exists; a dataset written after that was once
    # missed, and the job trained on the preset's sines instead.
    seen: list[bool] = []
    original = JobStore._insert

    def insert(self: JobStore, *args: Any) -> None:
        seen.append((self.job_dir(args[-1]) / "dataset.npz").is_file())  # args[-1]: the job id
        original(self, *args)

    monkeypatch.setattr(JobStore, "_insert", insert)
    x = np.zeros((8, 2, 1)).tolist()
    body = {"preset": "tutorial", "params": {"max_epochs": 1}, "dataset": {"inputs": x, "targets": x}}
    assert jobs_client.post("/train", json=body).status_code == 202
    assert seen == [True]


def test_a_refused_job_leaves_no_dataset_behind(store: model_store.ModelStore) -> None:
    with make_client(store, job_queue_max=0) as client:
        x = np.zeros((8, 2, 1)).tolist()
        response = client.post("/train", json={"dataset": {"inputs": x, "targets": x}})
        assert response.status_code == 429
        jobs_dir = store.root / ".jobs"
        assert [p.name for p in jobs_dir.iterdir() if p.is_dir()] == []


def test_oversized_dataset_is_413(store: model_store.ModelStore) -> None:
    with make_client(store, max_dataset_elements=10) as client:
        x = np.zeros((20, 1, 1)).tolist()
        response = client.post("/train", json={"dataset": {"inputs": x, "targets": x}})
        assert response.status_code == 413


def test_inline_dataset_trains_and_is_recorded(jobs_client: TestClient, store: model_store.ModelStore) -> None:
    x = np.sin(0.3 * np.arange(24)[:, None] + np.arange(6)[None, :])[..., None]
    dataset = {"inputs": x.tolist(), "targets": (-x).tolist()}
    job = jobs_client.post("/train", json={"preset": "tutorial", "params": {"max_epochs": 20}, "dataset": dataset})
    assert job.status_code == 202 and job.json()["dataset"] == {"shape": [24, 6, 1]}
    done = wait_job(jobs_client, job.json()["id"])
    assert done["status"] == "succeeded", done
    data = store.manifest("lstm", done["result"]["version"]).data
    expected = x.astype(np.float32)
    digest = hashlib.sha256(expected.tobytes() + (-expected).tobytes()).hexdigest()
    assert data["kind"] == "user_dataset" and data["shape"] == [24, 6, 1] and data["sha256"] == digest
    assert "dataset_test_mse" in done["result"]["metrics"]


def test_promotion_policies_through_the_api(jobs_client: TestClient, store: model_store.ModelStore) -> None:
    x = np.sin(0.3 * np.arange(30)[:, None] + np.arange(10)[None, :])[..., None]
    dataset = {"inputs": x.tolist(), "targets": (0.5 * x).tolist()}

    def train(epochs: int, promote: str) -> dict[str, Any]:
        body = {"preset": "tutorial", "params": {"max_epochs": epochs, "target_loss": 0}, "dataset": dataset}
        job = jobs_client.post("/train", json=body | {"promote": promote}).json()
        done = wait_job(jobs_client, job["id"])
        assert done["status"] == "succeeded", done
        return done["result"]  # type: ignore[no-any-return]

    assert train(100, "always")["promoted"] is True
    worse = train(1, "if_better")
    assert worse["promoted"] is False and "worse than serving version 1" in worse["promotion_reason"]
    assert train(1, "never")["promoted"] is False
    assert store.aliases("lstm") == {"production": 1}
    assert jobs_client.post("/predict", json={"inputs": [[[0.5]]]}).json()["version"] == 1


def test_events_stream_progress_then_end(jobs_client: TestClient) -> None:
    job = jobs_client.post("/train", json={"params": TINY}).json()
    events = []
    with jobs_client.stream("GET", f"/train/{job['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, orjson.loads(line.removeprefix("data: "))))
    names = [name for name, _ in events]
    assert names[-2:] == ["succeeded", "end"]
    assert "progress" in names
    assert events[-2][1]["progress"]["epoch"] == 30
    assert jobs_client.get("/train/nope/events").status_code == 404


def test_job_time_limit_fails_a_runaway_job(store: model_store.ModelStore) -> None:
    with make_client(store, job_poll_interval=0.1, job_time_limit=4) as client:
        job = client.post("/train", json={"params": ENDLESS}).json()
        done = wait_job(client, job["id"], timeout=60)
        assert done["status"] == "failed" and "time limit of 4 s" in done["error"]
        assert store.versions("lstm") == []


def test_job_whose_process_writes_a_line_over_1_mib_fails_and_its_process_is_killed(
    jobs_client: TestClient, store: model_store.ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_trainer(monkeypatch, "import time; print('x' * (2 << 20), flush=True); time.sleep(60)")
    job = jobs_client.post("/train", json={"params": TINY}).json()
    done = wait_job(jobs_client, job["id"], timeout=10)
    assert done["status"] == "failed" and "wrote a line longer than 1 MiB" in done["error"], done
    assert training_processes(store.root) == []  # the runner waits for the killed child before recording


def test_progress_line_longer_than_asyncio_default_limit_is_read(
    jobs_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = {"model": "lstm", "version": 1, "metrics": {}, "promoted": False, "promotion_reason": "fake"}
    script = [
        "import json",
        "note = 'x' * (512 << 10)  # over asyncio's 64 KiB default line limit, under the runner's 1 MiB",
        "print(json.dumps({'event': 'progress', 'epoch': 3, 'max_epochs': 30, 'loss': 0.5, 'note': note}))",
        f"print(json.dumps({{'event': 'result', **{result!r}}}))",
    ]
    fake_trainer(monkeypatch, "\n".join(script))
    job = jobs_client.post("/train", json={"params": TINY}).json()
    done = wait_job(jobs_client, job["id"], timeout=10)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"epoch": 3, "max_epochs": 30, "loss": 0.5} and done["result"] == result


def test_training_and_cancel_need_management_rights(store: model_store.ModelStore) -> None:
    with make_client(store, client=REMOTE) as client:
        assert client.post("/train", json={"params": TINY}).status_code == 403
        assert client.get("/train").status_code == 200
    with make_client(store, client=REMOTE, api_token="tok") as client:
        assert client.post("/train", json={"params": TINY}).status_code == 401
        assert client.post("/train", json={"params": TINY}, headers={"authorization": "Bearer no"}).status_code == 403
        accepted = client.post("/train", json={"params": ENDLESS}, headers={"authorization": "Bearer tok"})
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        assert client.delete(f"/train/{job_id}").status_code == 401
        assert client.delete(f"/train/{job_id}", headers={"authorization": "Bearer tok"}).status_code == 200


def test_running_job_of_a_dead_process_is_failed_at_start(store: model_store.ModelStore) -> None:
    save_tiny(store)
    jobs = JobStore(store.root)
    job = jobs.create(model="lstm", preset="robust", promote="never", params={}, max_epochs=5, queue_max=5)
    dead_pid = 2**22 + 12345  # above the kernel's pid_max default, so never alive
    jobs.claim(f"{socket.gethostname()}:{dead_pid}", concurrency=1)
    assert jobs.get(job.id).status == RUNNING
    with make_client(store) as client:
        shown = client.get(f"/train/{job.id}").json()
        assert shown["status"] == "failed" and "stopped before it finished" in shown["error"]
    assert store.versions("lstm") == [1]


def test_jobs_survive_a_restart(store: model_store.ModelStore) -> None:
    with make_client(store) as client:
        job = client.post("/train", json={"params": TINY}).json()
        done = wait_job(client, job["id"])
    with make_client(store) as client:
        assert client.get(f"/train/{job['id']}").json() == done
    assert os.path.exists(store.root / ".jobs" / "jobs.sqlite3")


def test_an_idle_runner_writes_nothing_to_the_job_database(
    store: model_store.ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_tiny(store)
    jobs = JobStore(store.root)
    done = jobs.create(model="lstm", preset="robust", promote="never", params={}, max_epochs=5, queue_max=5)
    jobs.claim("another-host:1", concurrency=1)
    jobs.finish(done.id, "failed", error="finished before the service started")  # a queue with history, none due
    writes: list[str] = []
    write = JobStore._write

    def counted(self: JobStore) -> Any:
        writes.append(self.path.name)
        return write(self)

    # An empty write transaction changes neither data_version nor a file, yet takes SQLite's one write lock:
    # so the transactions begun are counted too.
    monkeypatch.setattr(JobStore, "_write", counted)
    with make_client(store, job_poll_interval=0.05) as client:
        assert client.get(f"/train/{done.id}").status_code == 200
        writes.clear()
        watcher = sqlite3.connect(jobs.path)
        try:
            # data_version changes when any other connection commits a change; the files' mtimes, on any write.
            before = watcher.execute("PRAGMA data_version").fetchone()[0]
            files = {path: path.stat().st_mtime_ns for path in jobs.dir.glob("jobs.sqlite3*")}
            time.sleep(1.0)  # twenty of the runner's polls
            assert client.get("/train").json()["total"] == 1  # reading does not write either
            assert watcher.execute("PRAGMA data_version").fetchone()[0] == before
            assert {path: path.stat().st_mtime_ns for path in jobs.dir.glob("jobs.sqlite3*")} == files
            assert writes == []
        finally:
            watcher.close()


def test_the_openapi_job_models_describe_what_the_routes_answer(store: model_store.ModelStore) -> None:
    save_tiny(store)
    jobs = JobStore(store.root)
    dataset = {"shape": [4, 2, 1]}
    queued = jobs.create(
        model="lstm", preset="tutorial", promote="never", params={}, max_epochs=5, queue_max=5, dataset=dataset
    )
    jobs.claim("another-host:1", concurrency=1)
    jobs.progress(queued.id, 1, 5, 0.25)
    result = {"model": "lstm", "version": 2, "metrics": {"mse": 0.1}, "promoted": False, "promotion_reason": "never"}
    jobs.finish(queued.id, "succeeded", result=result)
    with make_client(store) as client:
        shown = client.get(f"/train/{queued.id}").json()
        assert TrainJob.model_validate(shown).model_dump(exclude_none=True) == {
            key: value for key, value in shown.items() if value is not None
        }
        page = client.get("/train").json()
        assert TrainJobPage.model_validate(page).total == 1
