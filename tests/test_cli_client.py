"""The `lstm` command against a real lstm-serve: every subcommand, text and --json, and its exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from lstm_client import Client
from lstm_client.sse import Event, events

import model_store
from tests.conftest import save_tiny
from tests.test_e2e import TINY_PARAMS, Server, free_port, start_server, stop

pytestmark = pytest.mark.slow

# The console script beside this interpreter (the venv's bin/, which need not be on PATH).
LSTM_COMMAND = str(Path(sys.executable).with_name("lstm"))
SINES = [0.0, 0.0998, 0.1987, 0.2955, 0.3894, 0.4794]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cli")
    store = model_store.ModelStore(root / "store")
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    running = start_server(store.root, root / "serve.log", LSTM_JOB_POLL_INTERVAL="0.1")
    yield running
    stop(running)


def lstm(*args: str, url: str | None = None, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    assert Path(LSTM_COMMAND).exists(), (
        "the lstm command is installed by `make install` (pip install -e clients/python)"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("LSTM_URL", "LSTM_API_TOKEN")} | env
    if url is not None:
        environment["LSTM_URL"] = url
    return subprocess.run(
        [LSTM_COMMAND, *args], input=stdin, capture_output=True, text=True, env=environment, timeout=180, check=False
    )


def served(url: str, sines: list[float], version: int | None = None) -> np.ndarray:
    body: dict[str, object] = {"inputs": [[[x]] for x in sines]}
    if version is not None:
        body["version"] = version
    return np.asarray(httpx.post(f"{url}/predict", json=body, timeout=30).json()["outputs"])[:, 0, 0]


def test_predict_from_arguments_file_and_stdin_prints_the_servers_cosines(server: Server, tmp_path: Path) -> None:
    expected = served(server.url, SINES)
    from_args = lstm("predict", *map(str, SINES), url=server.url)
    assert from_args.returncode == 0, from_args.stderr
    assert np.allclose([float(line) for line in from_args.stdout.split()], expected, atol=1e-5)
    assert "version 2" in from_args.stderr and "unreliable" in from_args.stderr

    values = tmp_path / "sines.txt"
    values.write_text("\n".join(map(str, SINES)) + "\n")
    from_file = lstm("--url", server.url, "--json", "predict", "--file", str(values), "--binary")
    assert from_file.returncode == 0, from_file.stderr
    answer = json.loads(from_file.stdout)
    assert answer["model"] == "lstm" and answer["version"] == 2
    assert np.allclose(np.asarray(answer["outputs"])[:, 0, 0], expected, atol=1e-6)

    from_stdin = lstm("--json", "predict", "--version", "1", url=server.url, stdin=", ".join(map(str, SINES)))
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert np.allclose(np.asarray(json.loads(from_stdin.stdout)["outputs"])[:, 0, 0], served(server.url, SINES, 1))

    nested = json.dumps([[[x], [-x]] for x in SINES])  # (seq, batch=2, 1): two columns per line
    two = lstm("predict", url=server.url, stdin=nested)
    assert two.returncode == 0 and all(len(line.split()) == 2 for line in two.stdout.splitlines())


def test_models_promote_and_roll_back(server: Server) -> None:
    listed = lstm("--json", "models", url=server.url)
    assert listed.returncode == 0
    (entry,) = json.loads(listed.stdout)
    assert [v["version"] for v in entry["versions"]][:2] == [1, 2]
    text = lstm("models", url=server.url)
    assert text.returncode == 0 and "v1" in text.stdout and "v2" in text.stdout

    promoted = lstm("promote", "lstm", "1", url=server.url)
    assert promoted.returncode == 0, promoted.stderr
    assert "production -> version 1" in promoted.stdout
    assert httpx.get(f"{server.url}/models", timeout=10).json()["models"][0]["aliases"]["production"] == 1
    back = lstm("--json", "promote", "lstm", "2", url=server.url)
    assert back.returncode == 0 and json.loads(back.stdout)["serving_version"] == 2


def test_train_follow_jobs_and_cancel(server: Server) -> None:
    params = [f"--param={name}={value}" for name, value in (TINY_PARAMS | {"max_epochs": 25}).items()]
    followed = lstm("train", *params, "--promote", "never", "--follow", url=server.url)
    assert followed.returncode == 0, followed.stderr
    assert "succeeded" in followed.stdout and "-> lstm v" in followed.stdout
    assert "epochs" in followed.stderr  # the progress line
    job_id = followed.stdout.split()[0]

    jobs = lstm("--json", "jobs", url=server.url)
    assert jobs.returncode == 0 and json.loads(jobs.stdout)[0]["id"] == job_id
    assert job_id in lstm("jobs", url=server.url).stdout

    endless = lstm("train", *params, "--param", "max_epochs=100000", "--promote", "never", url=server.url)
    assert endless.returncode == 0, endless.stderr
    endless_id = endless.stdout.strip()
    cancelled = lstm("--json", "cancel", endless_id, url=server.url)
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"
    again = lstm("cancel", endless_id, url=server.url)
    assert again.returncode == 4 and "409" in again.stderr  # finished: refused


def test_follow_exits_1_when_the_job_ends_cancelled(server: Server) -> None:
    command = [LSTM_COMMAND, "--url", server.url, "train", "--param", "max_epochs=100000", "--follow"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            deadline = time.monotonic() + 120
            while True:  # wait for its job to run, then cancel it from outside
                jobs = httpx.get(f"{server.url}/train", timeout=10).json()["jobs"]
                if jobs and jobs[0]["status"] == "running":
                    break
                assert time.monotonic() < deadline and process.poll() is None, "the followed job never ran"
                time.sleep(0.2)
            httpx.delete(f"{server.url}/train/{jobs[0]['id']}", timeout=30)
            out, err = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()  # a failed check must not leave it following
    assert process.returncode == 1, err
    assert "cancelled" in out and "cancelled" in err


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (("predict", "0.1", "abc"), None),
        (("predict",), ""),
        (("predict", "nan", "0.2"), None),
        (("predict", "--file", "/nonexistent/sines.txt"), None),
        (("train", "--param", "no-equals-sign"), None),
        (("promote", "lstm", "not-a-number"), None),
        (("frobnicate",), None),
        ((), None),
    ],
)
def test_usage_errors_exit_2(server: Server, args: tuple[str, ...], stdin: str | None) -> None:
    result = lstm(*args, url=server.url, stdin=stdin)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("predict", "--model", "nope", "0.1", "0.2"),
        ("predict", "--version", "99", "0.1", "0.2"),
        ("promote", "lstm", "99"),
        ("cancel", "no-such-job"),
        ("train", "--param", "hidden_size=0"),
    ],
)
def test_refused_requests_exit_4_with_the_servers_reason(server: Server, args: tuple[str, ...]) -> None:
    result = lstm(*args, url=server.url)
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert "refused (4" in result.stderr and "Traceback" not in result.stderr


def test_wrong_or_missing_token_is_refused_with_4(tmp_path: Path) -> None:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    guarded = start_server(store.root, tmp_path / "serve.log", LSTM_API_TOKEN="sesame")
    try:
        missing = lstm("promote", "lstm", "1", url=guarded.url)
        assert missing.returncode == 4 and "401" in missing.stderr
        wrong = lstm("--token", "nope", "promote", "lstm", "1", url=guarded.url)
        assert wrong.returncode == 4 and "403" in wrong.stderr
        right = lstm("promote", "lstm", "1", url=guarded.url, LSTM_API_TOKEN="sesame")
        assert right.returncode == 0, right.stderr
        assert lstm("predict", "0.1", "0.2", url=guarded.url).returncode == 0  # reading needs no token
    finally:
        stop(guarded)


def test_unreachable_or_failing_server_exits_5(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    result = lstm("models", url=nobody)
    assert result.returncode == 5 and "cannot reach" in result.stderr
    # A real lstm-serve on an empty store answers, but /predict is a 503 until a model exists.
    port = free_port()
    with open(tmp_path / "empty.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--store", str(tmp_path / "empty"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    empty = Server(url=f"http://127.0.0.1:{port}", port=port, process=process, log=tmp_path / "empty.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{empty.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "empty.log").read_text()
            time.sleep(0.1)
        failing = lstm("predict", "0.1", "0.2", url=empty.url)
        assert failing.returncode == 5 and "server error (503)" in failing.stderr, failing.stderr
    finally:
        stop(empty)


def test_help_documents_the_exit_codes_and_environment() -> None:
    result = lstm("--help")
    assert result.returncode == 0
    for text in ("exit codes", "LSTM_URL", "LSTM_API_TOKEN", "predict", "promote", "train", "jobs", "cancel"):
        assert text in result.stdout


def requests_to(url: str, route: str) -> float:
    """How many GETs of `route` (a template) the server has answered with 200, from /metrics."""
    wanted = f'lstm_http_requests_total{{method="GET",route="{route}",status="200"}} '
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(wanted))


def test_job_wait_follows_one_event_stream_instead_of_polling(server: Server) -> None:
    with Client(server.url) as client:
        job = client.train(params=TINY_PARAMS | {"max_epochs": 300}, promote="never")
        polled, streamed = requests_to(server.url, "/train/{job_id}"), requests_to(server.url, "/train/{job_id}/events")
        snapshots = list(job.watch(timeout=120))
        assert job.status == "succeeded" and snapshots[-1]["status"] == "succeeded"
        assert requests_to(server.url, "/train/{job_id}/events") == streamed + 1
        assert requests_to(server.url, "/train/{job_id}") == polled  # polling would have been ~1 per 0.5 s
        assert job.wait(timeout=10, progress=False)["version"] == job.data["result"]["version"]


def test_sse_reader_joins_data_lines_and_skips_comments() -> None:
    lines = ["event: progress", 'data: {"a":', "data: 1}", "", ": keep-alive", "", "data: x", "id: 3", "", "event: end"]
    assert list(events(lines)) == [Event("progress", '{"a":\n1}'), Event("message", "x")]


def test_ctrl_c_stops_following_with_130_and_the_job_goes_on(server: Server) -> None:
    command = [LSTM_COMMAND, "--url", server.url, "train", "--param", "max_epochs=100000", "--follow"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            deadline = time.monotonic() + 120
            while True:
                jobs = httpx.get(f"{server.url}/train", timeout=10).json()["jobs"]
                if jobs and jobs[0]["status"] == "running":
                    break
                assert time.monotonic() < deadline and process.poll() is None, "the followed job never ran"
                time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()  # a failed check must not leave it following
    assert process.returncode == 130, err
    assert "Traceback" not in err and f"lstm cancel {jobs[0]['id']}" in err
    assert httpx.get(f"{server.url}/train/{jobs[0]['id']}", timeout=10).json()["status"] == "running"
    httpx.delete(f"{server.url}/train/{jobs[0]['id']}", timeout=30)
