"""A read-only or full store, under a real lstm-serve: clear 503s (507 when full) naming the cause, serving
goes on, /metrics keeps answering, and the job runner says so once rather than a traceback every tick.

The store lives on a real tmpfs mounted for the test (remounted read-only, or filled): as root, file
permissions would not stop the server, a read-only mount does. Permissions are tested by running
lstm-serve as `nobody`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import model_store
from service.jobs import JobStore
from tests.conftest import mounted_tmpfs, save_tiny, wait_for
from tests.test_e2e import TINY_PARAMS, Server, free_port, start_server, stop
from tests.test_faults import REPO, fill

pytestmark = pytest.mark.slow


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path, "4m") as mount_point:
        yield mount_point


def lines(server: Server, fragment: str) -> list[str]:
    return [line for line in server.log.read_text().splitlines() if fragment in line]


def served_version(server: Server) -> int:
    response = httpx.post(f"{server.url}/predict", json={"inputs": [[[0.5]]]}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["version"]  # type: ignore[no-any-return]


def start(tmpfs: Path, tmp_path: Path) -> tuple[model_store.ModelStore, Server]:
    store = model_store.ModelStore(tmpfs / "store")
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    store.set_alias("lstm", model_store.PRODUCTION, 1)
    server = start_server(store.root, tmp_path / "serve.log", LSTM_JOB_POLL_INTERVAL="0.1")
    assert httpx.get(f"{server.url}/train", timeout=10).status_code == 200  # the job database exists
    return store, server


DATASET = {"inputs": [[[0.1]], [[0.2]]], "targets": [[[0.3]], [[0.4]]]}


def test_read_only_store_answers_503_naming_the_cause_and_serving_goes_on(tmpfs: Path, tmp_path: Path) -> None:
    store, server = start(tmpfs, tmp_path)
    try:
        mount("-o", "remount,ro", str(tmpfs))
        refused = {
            "promote": httpx.put(f"{server.url}/models/lstm/aliases/production", json={"version": 2}, timeout=30),
            "remove alias": httpx.delete(f"{server.url}/models/lstm/aliases/production", timeout=30),
            "delete": httpx.delete(f"{server.url}/models/lstm/versions/2", timeout=30),
            "train": httpx.post(f"{server.url}/train", json={"params": TINY_PARAMS}, timeout=30),
            "train with data": httpx.post(f"{server.url}/train", json={"dataset": DATASET}, timeout=30),
        }
        for what, response in refused.items():
            assert response.status_code == 503, (what, response.text)
            assert "read-only" in response.json()["error"].lower(), (what, response.text)
        jobs = httpx.get(f"{server.url}/train", timeout=30)  # SQLite may still read it: 200, or a 503 saying why
        assert jobs.status_code in (200, 503), jobs.text
        metrics = httpx.get(f"{server.url}/metrics", timeout=30)
        assert metrics.status_code == 200 and 'lstm_served_version{model="lstm"} 1.0' in metrics.text
        assert served_version(server) == 1
        assert httpx.get(f"{server.url}/models", timeout=10).status_code == 200
        time.sleep(2)  # some twenty runner ticks: the condition is logged once
        assert len(lines(server, "job runner paused")) == 1, server.log.read_text()[-3000:]
        assert lines(server, "Traceback") == [] and lines(server, "internal error") == []
        mount("-o", "remount,rw", str(tmpfs))
        promoted = httpx.put(f"{server.url}/models/lstm/aliases/production", json={"version": 2}, timeout=30)
        assert promoted.status_code == 200 and promoted.json()["serving_version"] == 2, promoted.text
        assert wait_for(lambda: len(lines(server, "job runner paused: recovered")) == 1)
        assert len(lines(server, "job runner paused")) == 2  # once failing, once recovered
        assert httpx.get(f"{server.url}/train", timeout=30).status_code == 200
    finally:
        stop(server)
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], capture_output=True)
    assert store.aliases("lstm") == {model_store.PRODUCTION: 2}
    assert lines(server, "Traceback") == []


def test_store_read_only_from_the_start_still_serves(tmpfs: Path, tmp_path: Path) -> None:
    store = model_store.ModelStore(tmpfs / "store")
    save_tiny(store, seed=1)
    mount("-o", "remount,ro", str(tmpfs))  # before the job database was ever created
    server = start_server(store.root, tmp_path / "serve.log", LSTM_JOB_POLL_INTERVAL="0.1")
    try:
        assert served_version(server) == 1
        jobs = httpx.get(f"{server.url}/train", timeout=30)
        assert jobs.status_code == 503 and "training-job database" in jobs.json()["error"], jobs.text
        metrics = httpx.get(f"{server.url}/metrics", timeout=30)
        assert metrics.status_code == 200 and "lstm_jobs_database_up 0.0" in metrics.text
        assert lines(server, "Traceback") == []
    finally:
        stop(server)


def test_full_store_answers_507_and_recovers_when_space_is_freed(tmpfs: Path, tmp_path: Path) -> None:
    store, server = start(tmpfs, tmp_path)
    filler = None
    try:
        filler = fill(tmpfs, 0)
        refused = {
            "promote": httpx.put(f"{server.url}/models/lstm/aliases/production", json={"version": 2}, timeout=30),
            "delete": httpx.delete(f"{server.url}/models/lstm/versions/2", timeout=30),
            "train with data": httpx.post(f"{server.url}/train", json={"dataset": DATASET}, timeout=30),
        }
        for what, response in refused.items():
            assert response.status_code == 507, (what, response.text)
            error = response.json()["error"]
            assert "No space left on device (ENOSPC)" in error or "disk is full" in error, (what, error)
        assert store.aliases("lstm") == {model_store.PRODUCTION: 1} and store.versions("lstm") == [1, 2]
        jobs = httpx.get(f"{server.url}/train", timeout=30)  # even reading needs room for SQLite's WAL index
        assert jobs.status_code == 507 and "full" in jobs.json()["error"], jobs.text
        assert 'lstm_served_version{model="lstm"} 1.0' in httpx.get(f"{server.url}/metrics", timeout=30).text
        assert served_version(server) == 1
        filler.unlink()
        filler = None
        jobs = httpx.get(f"{server.url}/train", timeout=30)
        assert jobs.status_code == 200 and jobs.json()["total"] == 0  # no job was queued without its dataset
        promoted = httpx.put(f"{server.url}/models/lstm/aliases/production", json={"version": 2}, timeout=30)
        assert promoted.status_code == 200, promoted.text
        assert served_version(server) == 2
        assert lines(server, "Traceback") == []
    finally:
        stop(server)
        if filler is not None:
            filler.unlink()


def start_as_nobody(root: Path, log: Path) -> Server:
    """lstm-serve run as the unprivileged user `nobody`, which may read the store but not write it."""
    port = free_port()
    environment = os.environ | {"LSTM_POLL_INTERVAL": "0.2", "LSTM_LOG_LEVEL": "warning", "HOME": "/tmp"}
    command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m", "service"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, "--store", str(root), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=REPO,
        )
    server = Server(url=f"http://127.0.0.1:{port}", port=port, process=process, log=log)
    try:
        assert wait_for(lambda: process.poll() is not None or _ready(server)), log.read_text()
        assert process.poll() is None, log.read_text()
    except BaseException:
        stop(server)
        raise
    return server


def _ready(server: Server) -> bool:
    try:
        return httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_store_not_writable_by_the_server_user_answers_503_naming_the_cause() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run lstm-serve as nobody")
    # Not under tmp_path: pytest makes /tmp/pytest-of-root 0700, which nobody cannot enter.
    top = Path(tempfile.mkdtemp(prefix="lstm-nobody-"))
    try:
        top.chmod(0o755)
        store = model_store.ModelStore(top / "store")
        save_tiny(store, seed=1)
        save_tiny(store, seed=2)
        store.set_alias("lstm", model_store.PRODUCTION, 1)
        JobStore(store.root)  # the job database exists, owned by root
        server = start_as_nobody(store.root, top / "serve.log")
        try:
            assert served_version(server) == 1
            promoted = httpx.put(f"{server.url}/models/lstm/aliases/production", json={"version": 2}, timeout=30)
            assert promoted.status_code == 503 and "Permission denied (EACCES)" in promoted.json()["error"]
            trained = httpx.post(f"{server.url}/train", json={"params": TINY_PARAMS}, timeout=30)
            assert trained.status_code == 503, trained.text
            assert "not writable by this process" in trained.json()["error"]
            assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 200
            time.sleep(1)
            assert len(lines(server, "job runner paused")) == 1
            assert lines(server, "Traceback") == []
        finally:
            stop(server)
        assert store.aliases("lstm") == {model_store.PRODUCTION: 1}
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_garbage_job_database_is_503_and_serving_goes_on(tmp_path: Path) -> None:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    (store.root / ".jobs").mkdir()
    (store.root / ".jobs/jobs.sqlite3").write_bytes(b"not a database, " * 512)
    server = start_server(store.root, tmp_path / "serve.log", LSTM_JOB_POLL_INTERVAL="0.1")
    try:
        assert served_version(server) == 1
        for response in (
            httpx.get(f"{server.url}/train", timeout=30),
            httpx.post(f"{server.url}/train", json={"params": TINY_PARAMS}, timeout=30),
        ):
            assert response.status_code == 503 and "file is not a database" in response.json()["error"]
        metrics = httpx.get(f"{server.url}/metrics", timeout=30)
        assert metrics.status_code == 200 and "lstm_jobs_database_up 0.0" in metrics.text
        time.sleep(1)  # ten runner ticks
        assert len(lines(server, "job runner paused")) == 1 and lines(server, "Traceback") == []
    finally:
        stop(server)
