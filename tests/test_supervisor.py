"""lstm-serve's supervisor against real processes: kill -9 takes every worker and training process with it,
SIGTERM drains and exits 0, a killed worker is replaced, --workers auto, and the log formats."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

import model_store
from benchmarks import harness
from service.config import Settings
from service.jobs import JobStore
from service.logs import JsonFormatter
from tests.conftest import save_tiny, wait_for
from tests.test_e2e import (
    TINY_PARAMS,
    Server,
    connections_by_worker,
    sigterm_during_a_request,
    start_server,
    stop,
    wait_job,
)
from tests.test_jobs import training_processes

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


gone = harness.gone  # exited, or a zombie nobody has collected yet (it runs nothing and holds no socket)
children = harness.children  # live direct children


def workers_of(server: Server) -> list[int]:
    """The live worker processes of a supervisor (multiprocessing's spawned children)."""
    return harness.spawned_workers(server.process.pid)


def runner_of(server: Server) -> int | None:
    """The supervisor's job-runner process (lstm-worker), if one runs."""
    found = [pid for pid in children(server.process.pid) if "service.lstm_worker" in harness.cmdline(pid)]
    return found[0] if found else None


def kill_all(pids: list[int]) -> None:
    """Clean up after a failed test: these are descendants of the server this test started."""
    for pid in pids:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def store(tmp_path: Path) -> model_store.ModelStore:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    return store


def test_kill_9_of_the_supervisor_takes_its_workers_and_their_training_with_it(
    store: model_store.ModelStore, tmp_path: Path
) -> None:
    server = start_server(store.root, tmp_path / "serve.log", workers=2, LSTM_JOB_POLL_INTERVAL="0.1")
    assert wait_for(lambda: len(workers_of(server)) == 2)
    body = {"params": TINY_PARAMS | {"max_epochs": 100_000}}
    job = httpx.post(f"{server.url}/train", json=body, timeout=10).json()
    wait_job(server.url, job["id"], ("running",))
    assert wait_for(lambda: len(training_processes(store.root)) == 1)
    left = children(server.process.pid) + training_processes(store.root)  # workers, resource tracker, training
    try:
        server.process.kill()  # kill -9: no code of the supervisor runs
        server.process.wait()
        assert wait_for(lambda: all(gone(pid) for pid in left)), [pid for pid in left if not gone(pid)]
    finally:
        kill_all(left)
    # The port is free at once: a new lstm-serve on it starts, and reports the job as failed, with the reason.
    restarted = start_server(store.root, tmp_path / "serve2.log", workers=2, port=server.port)
    try:
        shown = httpx.get(f"{restarted.url}/train/{job['id']}", timeout=10).json()
        assert shown["status"] == "failed" and "stopped before it finished" in shown["error"], shown
        assert store.versions("lstm") == [1]
    finally:
        stop(restarted)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_every_worker_and_exits_0(store: model_store.ModelStore, tmp_path: Path, workers: int) -> None:
    server = start_server(store.root, tmp_path / "serve.log", workers=workers)
    assert wait_for(lambda: len(workers_of(server)) == (workers if workers > 1 else 0))
    pids = workers_of(server)
    try:
        response = sigterm_during_a_request(server)
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert server.process.wait(timeout=60) == 0
        assert wait_for(lambda: all(gone(pid) for pid in pids))
    finally:
        kill_all(pids)
    assert "starting another" not in server.log.read_text()  # no worker was restarted during the shutdown


def test_a_worker_that_does_not_drain_is_killed_after_the_drain_timeout(
    store: model_store.ModelStore, tmp_path: Path
) -> None:
    server = start_server(store.root, tmp_path / "serve.log", workers=2, LSTM_DRAIN_TIMEOUT="1")
    assert wait_for(lambda: len(workers_of(server)) == 2)
    pids = workers_of(server)
    try:
        os.kill(pids[0], signal.SIGSTOP)  # a worker that can no longer act on SIGTERM
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=120) == 0
        assert wait_for(lambda: all(gone(pid) for pid in pids))
    finally:
        kill_all(pids)
    assert f"(pid {pids[0]}) still runs after the drain timeout; killing it" in server.log.read_text()


def test_a_setting_given_only_as_a_flag_reaches_every_worker_without_the_environment(
    store: model_store.ModelStore, tmp_path: Path
) -> None:
    # The resolved Settings travel in WorkerSpec: no worker's environment holds an LSTM_ variable lstm-serve set.
    server = start_server(store.root, tmp_path / "serve.log", workers=2, flags=["--max-body-bytes", "2048"])
    pids = workers_of(server)
    try:
        assert len(pids) == 2
        for pid in pids:
            names = {entry.split(b"=", 1)[0] for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")}
            assert not names & {b"LSTM_MAX_BODY_BYTES", b"LSTM_WORKERS", b"LSTM_STORE_DIR", b"LSTM_PORT"}
        # Once both workers listen, 16 connections open at once: the kernel spreads them over both workers, and
        # each says 413 above 2048. (Under load the second worker may not listen yet when the first answers.)
        assert wait_for(lambda: sorted(connections_by_worker(server, "0A").values()) == [1, 1])
        clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(16)]
        try:
            assert {client.get("/readyz").status_code for client in clients} == {200}  # each keeps its connection
            assert wait_for(lambda: len([n for n in connections_by_worker(server, "01").values() if n]) == 2)
            assert {client.post("/predict", content=b" " * 4096).status_code for client in clients} == {413}
        finally:
            for client in clients:
                client.close()
        assert httpx.post(f"{server.url}/predict", content=b" " * 1024, timeout=30).status_code != 413
    finally:
        stop(server)
        kill_all(pids)


def test_a_worker_killed_9_is_replaced_and_serves_again(store: model_store.ModelStore, tmp_path: Path) -> None:
    server = start_server(store.root, tmp_path / "serve.log", workers=2)
    try:
        assert wait_for(lambda: sorted(connections_by_worker(server, "0A").values()) == [1, 1])
        first = workers_of(server)
        os.kill(first[0], signal.SIGKILL)

        def replaced() -> bool:
            listening = connections_by_worker(server, "0A")
            return first[0] not in listening and sorted(listening.values()) == [1, 1]

        assert wait_for(replaced), connections_by_worker(server, "0A")
        new = next(pid for pid in workers_of(server) if pid not in first)
        assert first[1] in workers_of(server)  # the other worker served on meanwhile
        for _ in range(20):  # fresh connections: the kernel spreads them over both workers, the new one too
            answer = httpx.post(f"{server.url}/predict", json={"inputs": [[[0.5]]]}, headers={"connection": "close"})
            assert answer.status_code == 200, answer.text
        assert f"(pid {first[0]}) was killed by SIGKILL; starting another" in server.log.read_text()
        assert new != first[0]
    finally:
        assert stop(server) == 0


def test_the_job_runner_killed_9_during_a_job_leaves_no_training_process_and_no_zombie(
    store: model_store.ModelStore, tmp_path: Path
) -> None:
    server = start_server(store.root, tmp_path / "serve.log", workers=2, LSTM_JOB_POLL_INTERVAL="0.1")
    try:
        body = {"params": TINY_PARAMS | {"max_epochs": 100_000}}
        job = httpx.post(f"{server.url}/train", json=body, timeout=10).json()
        wait_job(server.url, job["id"], ("running",))
        assert wait_for(lambda: len(training_processes(store.root)) == 1)
        (training,) = training_processes(store.root)
        owner = harness.parent(training)
        assert owner is not None
        assert owner == runner_of(server)  # the job runner process trains, not a serving worker
        os.kill(owner, signal.SIGKILL)
        # The training process exits with its runner; the supervisor (a child subreaper) collects it, so it is
        # not left a zombie, and the restarted runner marks the job failed.
        assert wait_for(lambda: harness.state(training) is None), harness.state(training)
        shown = wait_job(server.url, job["id"], ("failed", "succeeded"))
        assert shown["status"] == "failed" and "stopped before it finished" in str(shown["error"]), shown
        assert wait_for(lambda: runner_of(server) not in (None, owner))  # and the killed runner was replaced
        assert f"the job runner (pid {owner}) was killed by SIGKILL; starting another" in server.log.read_text()
        assert len(workers_of(server)) == 2
        assert store.versions("lstm") == [1]
    finally:
        kill_all(training_processes(store.root))
        assert stop(server) == 0


def read_events(response: httpx.Response) -> Iterator[tuple[str | None, dict[str, object]]]:
    """The (event, data) pairs of an event stream as they come, to its end."""
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: "))


def test_two_workers_have_one_job_runner_that_runs_each_job_once_and_pushes_its_events(
    store: model_store.ModelStore, tmp_path: Path
) -> None:
    server = start_server(store.root, tmp_path / "serve.log", workers=2, LSTM_JOB_POLL_INTERVAL="0.1")
    try:
        assert wait_for(lambda: len(workers_of(server)) == 2)
        assert runner_of(server) is not None
        assert len([pid for pid in children(server.process.pid) if "service.lstm_worker" in harness.cmdline(pid)]) == 1
        body = {"params": TINY_PARAMS | {"max_epochs": 20}, "promote": "always"}
        # A connection each: the jobs reach whichever worker accepts, and both run in the one runner.
        jobs = [httpx.post(f"{server.url}/train", json=body, headers={"connection": "close"}).json() for _ in range(2)]
        for job in jobs:
            with httpx.stream("GET", f"{server.url}/train/{job['id']}/events", timeout=600) as response:
                assert response.status_code == 200
                events = list(read_events(response))
            names = [name for name, _ in events]
            assert names[-2:] == ["succeeded", "end"], names
            assert "progress" in names
        assert store.versions("lstm") == [1, 2, 3]  # each job once
        assert training_processes(store.root) == []
    finally:
        assert stop(server) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_an_open_event_stream_ends_at_sigterm_and_does_not_hold_up_the_drain(
    store: model_store.ModelStore, tmp_path: Path, workers: int
) -> None:
    jobs = JobStore(store.root)
    job = jobs.create(model="lstm", preset="robust", promote="never", params={}, max_epochs=5, queue_max=5)
    jobs.claim("another-host:1", concurrency=1)  # running elsewhere: its stream stays open until shutdown
    server = start_server(
        store.root,
        tmp_path / "serve.log",
        workers=workers,
        LSTM_DRAIN_TIMEOUT="600",
        LSTM_JOB_HEARTBEAT_TIMEOUT="3600",
    )
    ended = threading.Event()
    events: list[tuple[str | None, dict[str, object]]] = []

    def follow() -> None:
        with httpx.stream("GET", f"{server.url}/train/{job.id}/events", timeout=600) as response:
            events.extend(read_events(response))
        ended.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: events)  # the first snapshot arrived: the stream is open
        server.process.send_signal(signal.SIGTERM)
        assert ended.wait(timeout=120), "the stream was not closed at shutdown"
        assert server.process.wait(timeout=120) == 0
    finally:
        stop(server)
    assert [name for name, _ in events] == ["progress"]  # the running job's snapshot, then nothing: no `end`
    assert "graceful shutdown exceeded" not in server.log.read_text()


# Loaded by every interpreter that PYTHONPATH reaches; it breaks only the workers' app factory (the workers get
# their settings from lstm-serve, not from the environment), so the supervisor starts and each worker fails, as
# a worker whose start-up fails would.
BREAK_WORKERS = """
import sys
if "--multiprocessing-fork" in sys.argv:
    import service.app

    def create_app(settings, **options):
        raise ValueError("this worker's app cannot be built")

    service.app.create_app = create_app
"""


def test_a_worker_that_fails_to_start_stops_lstm_serve(tmp_path: Path, served_store: model_store.ModelStore) -> None:
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(BREAK_WORKERS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "inject"), str(REPO)])}
    command = [sys.executable, "-m", "service", "--store", str(served_store.root), "--port", "0", "--workers", "2"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO) as process:
        try:
            out, _ = process.communicate(timeout=300)  # uvicorn's own supervisor restarted such workers forever
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    # lstm-serve stops with the failed worker's status: 1, from the exception its app factory raised.
    assert process.returncode == 1, out.decode()[-3000:]
    assert b"exited with status 1 before it was ready; stopping lstm-serve" in out


def test_workers_setting_accepts_a_number_or_auto() -> None:
    assert Settings(workers="auto").workers == "auto"
    assert Settings(workers="3").workers == 3
    for bad in ("0", "65", "many", "2.5"):
        with pytest.raises(ValueError, match="auto"):
            Settings(workers=bad)


def serve_auto(root: Path, log: Path, prefix: list[str]) -> tuple[Server, int]:
    """lstm-serve --workers auto under `prefix` (e.g. taskset); the server and its worker count."""
    port = 0
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "service", "--store", str(root), "--port", str(port), "--workers", "auto"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | {"LSTM_LOG_LEVEL": "info"},
        )
    server = Server(url="", port=0, process=process, log=log)
    try:
        listening = re.compile(rb"on http://127\.0\.0\.1:(\d+)")
        assert wait_for(lambda: listening.search(log.read_bytes()) is not None or process.poll() is not None)
        found = listening.search(log.read_bytes())
        assert found, log.read_text()
        server.port = int(found[1])
        server.url = f"http://127.0.0.1:{server.port}"
        assert wait_for(lambda: b"Application startup complete" in log.read_bytes())
        started = len(workers_of(server))
    except BaseException:
        stop(server)
        raise
    return server, started


def test_workers_auto_runs_one_worker_per_core_of_the_cpu_budget(store: model_store.ModelStore, tmp_path: Path) -> None:
    budget = model_store.cpu_budget()  # this test's process has the same affinity and cgroup as the server
    server, started = serve_auto(store.root, tmp_path / "serve.log", [])
    try:
        assert wait_for(lambda: len(workers_of(server)) == (budget.threads if budget.threads > 1 else 0))
        text = server.log.read_text()
        workers = f"{budget.threads} worker{'' if budget.threads == 1 else 's'}"
        assert f"--workers auto: {workers} for a CPU budget of {budget.describe()}" in text
        if budget.threads > 1:  # the budget was worked out in a child: the supervisor itself never loads torch
            assert b"libtorch" not in Path(f"/proc/{server.process.pid}/maps").read_bytes()
    finally:
        assert stop(server) == 0
    if shutil.which("taskset") is None or budget.affinity < 2:
        return
    # One CPU in the affinity mask: a budget of one core, so one worker, in the lstm-serve process itself.
    first_cpu = min(os.sched_getaffinity(0))
    server, started = serve_auto(store.root, tmp_path / "serve1.log", ["taskset", "-c", str(first_cpu)])
    try:
        assert started == 0 and "with 1 worker, in this process" in server.log.read_text()
        assert "--workers auto: 1 worker for a CPU budget of 1 cores" in server.log.read_text()
    finally:
        assert stop(server) == 0


# ---- logs --------------------------------------------------------------------------------


def test_a_json_log_record_with_a_traceback_stays_one_line() -> None:
    try:
        raise ValueError("two\nlines é")
    except ValueError:
        record = logging.LogRecord("service.app", logging.ERROR, __file__, 1, "failed: %s", ("x",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed: x" and entry["level"] == "ERROR" and entry["logger"] == "service.app"
    assert entry["exception"].startswith("Traceback") and entry["exception"].endswith("ValueError: two\nlines é")
    assert "client" not in entry  # access fields only on access lines
    utc(entry["time"])


TEXT_LINE = re.compile(r"^(\S+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+) \[(\d+)\]: (.*)$")


def utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0, text  # type: ignore[union-attr]
    return moment


def serve_and_log(store: model_store.ModelStore, tmp_path: Path, log_format: str) -> list[str]:
    """Start 2 workers at log level info in `log_format`, answer /healthz and a 404, stop; the output's lines."""
    server = start_server(
        store.root, tmp_path / "serve.log", workers=2, LSTM_LOG_LEVEL="info", LSTM_LOG_FORMAT=log_format
    )
    try:
        assert httpx.get(f"{server.url}/healthz?probe=1", timeout=10).status_code == 200
        assert httpx.get(f"{server.url}/nope", timeout=10).status_code == 404
    finally:
        assert stop(server) == 0
    return [line for line in server.log.read_text().splitlines() if line.strip()]


def test_text_log_lines_all_carry_a_utc_timestamp(store: model_store.ModelStore, tmp_path: Path) -> None:
    lines = serve_and_log(store, tmp_path, "text")
    parsed = [TEXT_LINE.match(line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed, strict=True) if not match][:5]
    for match in parsed:
        assert match is not None
        utc(match[1])
    loggers = {match[3] for match in parsed if match}
    assert {"service.supervisor", "uvicorn.error", "uvicorn.access", "service.predictor"} <= loggers, loggers
    access = [match[5] for match in parsed if match and match[3] == "uvicorn.access"]
    assert any('"GET /healthz?probe=1 HTTP/1.1" 200' in line for line in access), access


def test_json_log_lines_are_one_object_each_with_access_fields(store: model_store.ModelStore, tmp_path: Path) -> None:
    lines = serve_and_log(store, tmp_path, "json")
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    for entry in entries:
        assert {"time", "level", "logger", "message", "pid"} <= entry.keys(), entry
        utc(entry["time"])
    assert {"service.supervisor", "uvicorn.error", "service.predictor"} <= {entry["logger"] for entry in entries}
    access = [entry for entry in entries if entry["logger"] == "uvicorn.access"]
    assert {"client", "method", "path", "status"} <= access[0].keys()
    shown = {(entry["method"], entry["path"], entry["status"]) for entry in access}
    assert {("GET", "/healthz?probe=1", 200), ("GET", "/nope", 404)} <= shown, shown
    assert all(entry["client"].startswith("127.0.0.1:") for entry in access)
    pids = {entry["pid"] for entry in entries}
    assert len(pids) >= 3  # the supervisor and both workers
