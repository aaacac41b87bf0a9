"""End to end against real lstm-serve processes: workers, live promotion, draining, a real OIP client."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

import model_store
from benchmarks import harness
from benchmarks.harness import free_port as free_port  # re-exported: other end-to-end tests import it here
from tests.conftest import save_tiny

pytestmark = pytest.mark.slow


Server = harness.ServeProcess  # a real lstm-serve: url, port, process, log


def start_server(
    root: Path, log: Path, workers: int = 1, port: int | None = None, flags: Sequence[str] = (), **env: str
) -> Server:
    """A ready lstm-serve on `root` with this process's environment, quick store polling and a quiet log, plus `env`
    and `flags`."""
    environment = os.environ | {"LSTM_POLL_INTERVAL": "0.2", "LSTM_LOG_LEVEL": "warning"} | env
    return harness.start_lstm_serve(root, log, workers=workers, port=port, args=flags, env=environment)


def stop(server: Server) -> int:
    """SIGTERM, wait for the drain (SIGKILL after 120 s), reap; the exit status."""
    return harness.stop(server, timeout=120)


@pytest.fixture
def two_versions(tmp_path: Path) -> model_store.ModelStore:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    return store


@pytest.fixture
def two_workers(two_versions: model_store.ModelStore, tmp_path: Path) -> Iterator[Server]:
    server = start_server(two_versions.root, tmp_path / "serve.log", workers=2)
    yield server
    stop(server)


def test_the_supervisor_does_not_import_torch() -> None:
    # With --workers N, uvicorn's supervisor only spawns and watches; torch there delays every start.
    code = "import sys, service.__main__; print(sorted(m for m in ('torch', 'fastapi') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


TCP_STATES = {"0A": psutil.CONN_LISTEN, "01": psutil.CONN_ESTABLISHED}  # the kernel's codes, as /proc/net/tcp shows


def connections_by_worker(server: Server, state: str) -> dict[int, int]:
    """How many TCP sockets on the server's port, in `state` ("0A" listen, "01" established), each worker holds."""
    wanted = TCP_STATES[state]
    counts = {}
    for pid in harness.spawned_workers(server.process.pid):
        try:
            sockets = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        counts[pid] = sum(1 for s in sockets if s.laddr and s.laddr.port == server.port and s.status == wanted)
    return counts


def test_two_workers_each_get_a_share_of_connections_opened_at_once(two_workers: Server) -> None:
    deadline = time.monotonic() + 30
    while sorted(connections_by_worker(two_workers, "0A").values()) != [1, 1]:  # both listening, a socket each
        assert time.monotonic() < deadline, connections_by_worker(two_workers, "0A")
        time.sleep(0.1)
    clients = [http.client.HTTPConnection("127.0.0.1", two_workers.port, timeout=10) for _ in range(32)]
    try:
        for client in clients:  # all connected before any request, as wrk and connection pools do
            client.connect()
        for client in clients:
            client.request("GET", "/healthz")
            assert client.getresponse().status == 200
        counts = connections_by_worker(two_workers, "01")
    finally:
        for client in clients:
            client.close()
    # With one shared listening socket this was 32/0 or 31/1; with a socket per worker the kernel spreads them
    # by hash (fewer than 4 of 32 on one worker: probability about 1e-5).
    assert sum(counts.values()) == 32 and min(counts.values()) >= 4, counts


def test_a_taken_port_stops_lstm_serve_with_workers_at_once(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "service", "--store", str(tmp_path), "--port", str(port), "--workers", "2"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


# Generous: the other worker switches at its next store poll, which a busy machine delays by seconds.
SETTLE = 10.0


def test_promotion_under_load_drops_nothing_and_every_worker_switches(two_workers: Server) -> None:
    body = {"inputs": np.sin(0.2 * np.arange(30)).reshape(30, 1, 1).tolist()}
    results: list[tuple[float, int, int]] = []  # (sent at, status, version)
    promoted_at = float("inf")
    give_up = time.monotonic() + 120.0

    def enough() -> bool:
        # Run until 20 requests have been sent more than SETTLE s after the promotion (bounded: a busy
        # machine slows requests down, it must not make the test pass or fail by luck).
        late = sum(1 for sent, _, _ in results if sent > promoted_at + SETTLE)
        return late >= 20 or time.monotonic() > give_up

    def hammer() -> None:
        while not enough():
            sent = time.monotonic()
            # A new connection per request, so the kernel spreads requests over both workers.
            response = httpx.post(f"{two_workers.url}/predict", json=body, headers={"connection": "close"}, timeout=10)
            version = response.json().get("version", -1) if response.status_code == 200 else -1
            results.append((sent, response.status_code, version))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    while len(results) < 20 and time.monotonic() < give_up:
        time.sleep(0.05)
    promoted = httpx.put(f"{two_workers.url}/models/lstm/aliases/production", json={"version": 1}, timeout=10)
    promoted_at = time.monotonic()
    assert promoted.status_code == 200, promoted.text
    for thread in threads:
        thread.join()

    assert all(status == 200 for _, status, _ in results), [r for r in results if r[1] != 200][:5]
    assert {version for _, _, version in results} <= {1, 2}
    assert any(version == 2 for sent, _, version in results if sent < promoted_at)
    late = [version for sent, _, version in results if sent > promoted_at + SETTLE]
    assert len(late) >= 20 and set(late) == {1}
    metrics = httpx.get(f"{two_workers.url}/metrics").text
    served = [line for line in metrics.splitlines() if line.startswith("lstm_served_version{")]
    assert len(served) == 2 and all(line.endswith(" 1.0") for line in served), served


def sigterm_during_a_request(server: Server) -> bytes:
    """Send half a /predict, SIGTERM `server` while it waits for the rest, then finish it: the response read."""
    payload = b'{"inputs": [[[0.1]], [[0.2]], [[0.3]]]}'
    head = (
        f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head.encode() + payload[:10])  # the request is now in flight (in one of the workers)
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.process.poll() is None  # still draining
        sock.sendall(payload[10:])
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
    return response


def test_sigterm_drains_an_in_flight_request(two_versions: model_store.ModelStore, tmp_path: Path) -> None:
    server = start_server(two_versions.root, tmp_path / "serve.log")
    response = sigterm_during_a_request(server)
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    assert b'"outputs"' in response
    assert server.process.wait(timeout=120) == 0  # drained, then a clean exit (service/http_server.py)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz", timeout=1)


def test_tritonclient_works_unchanged(two_workers: Server) -> None:
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(url=two_workers.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("lstm")
    assert client.get_model_metadata("lstm")["inputs"][0]["shape"] == [-1, -1, 1]
    x = np.sin(0.3 * np.arange(40)).astype(np.float32).reshape(20, 2, 1)
    for binary in (True, False):
        infer_input = http.InferInput("input", list(x.shape), "FP32")
        infer_input.set_data_from_numpy(x, binary_data=binary)
        output = http.InferRequestedOutput("output", binary_data=binary)
        result = client.infer("lstm", [infer_input], outputs=[output], model_version="2")
        expected = httpx.post(f"{two_workers.url}/predict", json={"inputs": x.tolist(), "version": 2}).json()
        assert np.allclose(result.as_numpy("output"), np.array(expected["outputs"]), atol=1e-6)
    with pytest.raises(Exception, match="not found"):
        client.infer("nope", [infer_input])
    client.close()


TINY_PARAMS = {"hidden_size": 6, "num_layers": 1, "batch_size": 8, "seq_len": 16, "short_batch_size": 8}


def wait_job(url: str, job_id: str, until: tuple[str, ...], timeout: float = 600) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, object] = httpx.get(f"{url}/train/{job_id}", timeout=10).json()
        progress = job["progress"]
        assert isinstance(progress, dict)
        if job["status"] in until and (job["status"] != "running" or progress["epoch"] > 0):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {until}")


def test_kill_9_during_a_job_then_restart_marks_it_failed_and_keeps_the_store(
    two_versions: model_store.ModelStore, tmp_path: Path
) -> None:
    server = start_server(two_versions.root, tmp_path / "serve.log", LSTM_JOB_POLL_INTERVAL="0.1")
    body = {"params": TINY_PARAMS | {"max_epochs": 100_000}, "promote": "always"}
    job = httpx.post(f"{server.url}/train", json=body, timeout=10).json()
    wait_job(server.url, job["id"], ("running",))
    server.process.kill()  # kill -9: no shutdown code runs
    server.process.wait()
    deadline = time.monotonic() + 60  # the training child notices its parent is gone and exits
    while time.monotonic() < deadline and harness.find_processes(str(two_versions.root), substring=True):
        time.sleep(0.1)
    restarted = start_server(two_versions.root, tmp_path / "serve2.log")
    try:
        shown = httpx.get(f"{restarted.url}/train/{job['id']}").json()
        assert shown["status"] == "failed" and "stopped before it finished" in shown["error"]
        assert two_versions.versions("lstm") == [1, 2]
        assert not [p for p in (two_versions.root / "lstm").iterdir() if p.name.startswith(".staging")]
        for version in (1, 2):
            two_versions.load("lstm", version)
        assert httpx.post(f"{restarted.url}/predict", json={"inputs": [[[0.5]]]}).json()["version"] == 2
    finally:
        stop(restarted)


def test_two_workers_run_one_job_exactly_once_and_agree_on_it(
    two_versions: model_store.ModelStore, tmp_path: Path
) -> None:
    server = start_server(two_versions.root, tmp_path / "serve.log", workers=2, LSTM_JOB_POLL_INTERVAL="0.1")
    try:
        body = {"params": TINY_PARAMS | {"max_epochs": 40}, "promote": "always"}
        job = httpx.post(f"{server.url}/train", json=body, timeout=10).json()
        done = wait_job(server.url, job["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded", done
        assert two_versions.versions("lstm") == [1, 2, 3]  # one new version, not two
        answers = {
            httpx.get(f"{server.url}/train/{job['id']}", headers={"connection": "close"}).text for _ in range(20)
        }
        assert len(answers) == 1
        time.sleep(2.0)  # every worker follows a promotion within 2 s
        late = {
            httpx.post(f"{server.url}/predict", json={"inputs": [[[0.5]]]}, headers={"connection": "close"}).json()[
                "version"
            ]
            for _ in range(20)
        }
        assert late == {3}
    finally:
        stop(server)
