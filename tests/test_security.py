"""Security: loopback behind a proxy, request ids, no tracebacks, CORS, paths out of the store, pickles, SSE cap."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import model_store
from service import Settings, create_app
from service.jobs import JobStore
from tests.conftest import LOOPBACK, make_client, save_tiny
from tests.test_e2e import start_server, stop

REPO = Path(__file__).resolve().parents[1]
SPOOFED = {"X-Forwarded-For": "203.0.113.9"}


# ---- the loopback rule behind a proxy (real processes: uvicorn's proxy-header handling is what is tested) --


@pytest.mark.slow
def test_forwarded_for_is_not_trusted_unless_configured(served_store: model_store.ModelStore, tmp_path: Path) -> None:
    server = start_server(served_store.root, tmp_path / "plain.log")
    try:
        url = f"{server.url}/models/lstm/aliases/production"
        # Not configured: the header is the client's word only; the peer is loopback, so management is open.
        assert httpx.put(url, json={"version": 1}, headers=SPOOFED).status_code == 200
    finally:
        stop(server)
    server = start_server(served_store.root, tmp_path / "proxied.log", LSTM_FORWARDED_ALLOW_IPS="127.0.0.1")
    try:
        url = f"{server.url}/models/lstm/aliases/production"
        # 127.0.0.1 is a trusted proxy now: the request is from the address it forwards for, a remote one.
        refused = httpx.put(url, json={"version": 2}, headers=SPOOFED)
        assert refused.status_code == 403 and "loopback" in refused.json()["error"]
        assert httpx.put(url, json={"version": 2}).status_code == 200  # the proxy's own requests stay loopback
    finally:
        stop(server)


# ---- request ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("3f2c9a1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b", True),
        ("edge-proxy:42/7", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("has space", False),
        ('quote"d', False),
        ("", False),
    ],
)
def test_request_id_is_echoed_when_sane_else_replaced(client: TestClient, sent: str, kept: bool) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": sent})
    echoed = response.headers["X-Request-ID"]
    if kept:
        assert echoed == sent
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), echoed


def test_every_answer_carries_a_request_id(client: TestClient) -> None:
    answers = [
        client.get("/healthz"),
        client.get("/nope"),
        client.post("/predict", content=b"{"),
        client.post("/predict", json={"inputs": [[[0.5]]], "model": "nope"}),
        client.get("/metrics"),
    ]
    ids = [answer.headers.get("X-Request-ID") for answer in answers]
    assert all(ids) and len(set(ids)) == len(ids), ids


def test_a_500_has_no_traceback_and_names_its_request_id_in_the_answer_and_the_log(
    served_store: model_store.ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(store_dir=served_store.root, grpc=False))
    with TestClient(app, client=LOOPBACK, raise_server_exceptions=False) as client:

        def broken() -> model_store.Scan:
            raise RuntimeError("secret internals /etc/passwd")

        app.state.components.repository.store.scan = broken  # what GET /models lists the store with
        with caplog.at_level(logging.ERROR, logger="service.app"):
            response = client.get("/models", headers={"X-Request-ID": "trace-me-123"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "trace-me-123"
    assert response.json() == {"error": "internal error; see the server log (request trace-me-123)"}
    assert "Traceback" not in response.text and "secret" not in response.text
    (record,) = [r for r in caplog.records if "unhandled error" in r.getMessage()]
    assert "trace-me-123" in record.getMessage() and record.exc_info is not None


# ---- CORS -------------------------------------------------------------------------------------

PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}


def test_cors_is_off_by_default(client: TestClient) -> None:
    preflight = client.options("/predict", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    simple = client.post("/predict", json={"inputs": [[[0.5]]]}, headers={"Origin": "https://app.example"})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_cors_allows_only_the_configured_origins(served_store: model_store.ModelStore) -> None:
    with make_client(served_store, cors_origins=["https://app.example"]) as client:
        allowed = client.options("/predict", headers=PREFLIGHT)
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options("/predict", headers=PREFLIGHT | {"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# ---- paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/models/..%2F..%2Fetc/versions/1",
        "/models/%2e%2e/versions/1",
        "/models/lstm%00/versions/1",
        "/models/lstm/versions/1%2F..%2F..%2Faliases.json/report.png",
        "/v2/models/..%2Fother/versions/1",
        "/v2/models/%2e%2e/infer",
        "/train/..%2F..%2Fjobs.sqlite3",
    ],
)
def test_names_that_would_leave_the_store_are_refused(client: TestClient, path: str) -> None:
    method = "POST" if path.endswith("/infer") else "GET"
    response = client.request(method, path, json={})
    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"] == "application/json", "only JSON errors, never a file"


def test_no_pickle_is_ever_loaded() -> None:
    """torch.load and pickle unpickle arbitrary code; np.load must refuse pickles explicitly."""
    sources = [path for package in ("service", "model_store", "training") for path in (REPO / package).rglob("*.py")]
    assert len(sources) > 20
    for path in sources:
        text = path.read_text()
        assert "torch.load(" not in text and "import pickle" not in text and "pickle.load" not in text, path
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, (path, call)


# ---- the cap on event streams holds for a burst ------------------------------------------------


def test_a_burst_of_event_streams_never_exceeds_the_cap(store: model_store.ModelStore) -> None:
    save_tiny(store)
    jobs = JobStore(store.root)
    job = jobs.create(model="lstm", preset="robust", promote="never", params={}, max_epochs=5, queue_max=5)
    jobs.claim("another-host:1", concurrency=1)  # running elsewhere: this service never touches it
    with make_client(store, max_sse_clients=2, job_heartbeat_timeout=3600) as client:
        events = client.app.state.components.job_events  # type: ignore[attr-defined]
        statuses: list[int] = []
        opened = threading.Barrier(8)
        answered = threading.Barrier(9)  # the 8 clients and this test
        job_done = threading.Event()

        def follow() -> None:
            opened.wait()
            with client.stream("GET", f"/train/{job.id}/events") as response:
                statuses.append(response.status_code)
                answered.wait()  # every stream that was let in is still open while the others ask
                job_done.wait()
                response.read()  # to its `end` event

        threads = [threading.Thread(target=follow) for _ in range(8)]
        for thread in threads:
            thread.start()
        answered.wait()
        jobs.finish(job.id, "failed", error="stopped by the test")  # the open streams send `end` and return
        job_done.set()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200, 200] + [429] * 6, statuses
        deadline = time.monotonic() + 5
        while events.streams and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events.streams == 0, "a slot was never given back"
