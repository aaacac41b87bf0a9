"""uvicorn's connection limits from LSTM_LIMIT_CONCURRENCY and LSTM_TIMEOUT_KEEP_ALIVE, on real lstm-serve."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

import model_store
import service.__main__
from service import Settings
from tests.test_e2e import Server, start_server, stop


def held_connection(server: Server, stack: ExitStack) -> socket.socket:
    """A connection that sent half a request head and waits: uvicorn counts it as open, never as a request."""
    sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=10))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    return sock


def eventually_status(url: str, status: int, timeout: float = 10.0) -> int:
    """GET `url` on fresh connections until it answers `status` or `timeout` passes; the last status seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = httpx.get(url, timeout=10).status_code
        if seen == status or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


@pytest.fixture
def limited(served_store: model_store.ModelStore, tmp_path: Path) -> Iterator[Server]:
    server = start_server(served_store.root, tmp_path / "serve.log", LSTM_LIMIT_CONCURRENCY="2")
    yield server
    stop(server)


@pytest.mark.slow
def test_requests_over_the_concurrency_limit_get_503_until_connections_close(limited: Server) -> None:
    body = {"inputs": [[[0.1]], [[0.2]]]}
    with ExitStack() as stack:
        for _ in range(2):
            held_connection(limited, stack)
        refused = httpx.post(f"{limited.url}/predict", json=body, timeout=10)
        # uvicorn's own answer: the request never reaches the app (no JSON error, no request id).
        assert (refused.status_code, refused.text) == (503, "Service Unavailable")
        assert refused.headers["connection"] == "close"
        assert httpx.get(f"{limited.url}/healthz", timeout=10).status_code == 503  # probes count too
    # The held connections are closed; the server notices it asynchronously, then serves again.
    assert eventually_status(f"{limited.url}/healthz", 200) == 200
    assert httpx.post(f"{limited.url}/predict", json=body, timeout=10).status_code == 200
    with ExitStack() as stack:
        # The requester's own connection counts: with a limit of 2, one other open connection is enough.
        held_connection(limited, stack)
        assert httpx.get(f"{limited.url}/healthz", timeout=10).status_code == 503
    assert eventually_status(f"{limited.url}/healthz", 200) == 200


@pytest.mark.slow
def test_idle_keep_alive_connection_is_closed_after_the_configured_time(
    served_store: model_store.ModelStore, tmp_path: Path
) -> None:
    server = start_server(served_store.root, tmp_path / "serve.log", LSTM_TIMEOUT_KEEP_ALIVE="1")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = sock.recv(65536)
                assert chunk, response
                response += chunk
            answered = time.monotonic()
            assert response.startswith(b"HTTP/1.1 200"), response[:200]
            assert b"connection: close" not in response.lower()  # kept alive, so the timer is what closes it
            while sock.recv(65536):  # the rest of the body, then b"" once the server closes
                pass
            idle = time.monotonic() - answered
        # Loose bounds: after the answer, not at once, and well before uvicorn's default of 5 s.
        assert 0.5 < idle < 4.0, idle
    finally:
        stop(server)


def test_limits_are_validated_and_passed_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().limit_concurrency is None and Settings().timeout_keep_alive == 5
    with pytest.raises(ValidationError):
        Settings(limit_concurrency=1)  # uvicorn counts the requester's connection: 1 would refuse everything
    with pytest.raises(ValidationError):
        Settings(timeout_keep_alive=0)
    monkeypatch.setenv("LSTM_LIMIT_CONCURRENCY", "64")
    monkeypatch.setenv("LSTM_TIMEOUT_KEEP_ALIVE", "30")
    options = service.__main__.uvicorn_options(Settings(), {})  # what every worker's uvicorn.Config gets
    assert options["limit_concurrency"] == 64 and options["timeout_keep_alive"] == 30
