"""An oversized body gets its 413 through every ordinary client, against a real lstm-serve (issue 11, item 8)."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

import model_store
from service.config import Settings
from tests.conftest import save_tiny
from tests.test_e2e import Server, start_server, stop

pytestmark = pytest.mark.slow

LIMIT = Settings.model_fields["max_body_bytes"].default  # the default limit: 16 MiB
BIG = 24_000_000  # 24 MB: over the limit, under the default discard bound
ROUTES = ["/predict", "/v2/models/lstm/infer"]
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("bodies")
    store = model_store.ModelStore(root / "store")
    save_tiny(store, seed=1)
    running = start_server(store.root, root / "serve.log")
    yield running
    stop(running)


def chunks(total: int, size: int = 1_000_000) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


def assert_413(status: int, body: bytes, chunked: bool) -> None:
    assert status == 413, body[:300]
    error = orjson.loads(body)["error"]
    assert f"over the limit of {LIMIT} bytes" in error
    if not chunked:
        assert f"request body of {BIG} bytes" in error


def urllib_post(url: str, data: bytes | Iterator[bytes]) -> tuple[int, bytes]:
    # urllib sends `Connection: close` and its whole body before it reads: the client that used to get
    # "Connection reset by peer" (or "Broken pipe") instead of the answer.
    request = urllib.request.Request(url, data=data, headers=JSON, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_urllib_reads_the_413_for_an_oversized_body(server: Server, route: str, chunked: bool) -> None:
    status, body = urllib_post(server.url + route, chunks(BIG) if chunked else b" " * BIG)
    assert_413(status, body, chunked)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_http_client_reads_the_413_and_may_reuse_the_connection(server: Server, route: str, chunked: bool) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        connection.request("POST", route, body=chunks(BIG) if chunked else b" " * BIG, headers=JSON)
        response = connection.getresponse()
        assert_413(response.status, response.read(), chunked)
        # The whole body was read, so the connection is still good for the next request.
        connection.request("POST", "/predict", body=b'{"inputs": [[[0.5]]]}', headers=JSON)
        assert connection.getresponse().status == 200
    finally:
        connection.close()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_httpx_reads_the_413_for_an_oversized_body(server: Server, route: str, chunked: bool) -> None:
    content: bytes | Iterator[bytes] = chunks(BIG) if chunked else b" " * BIG
    response = httpx.post(server.url + route, content=content, headers=JSON, timeout=120)
    assert_413(response.status_code, response.content, chunked)


def test_a_body_over_the_discard_bound_is_answered_at_once_and_the_connection_closed(tmp_path: Path) -> None:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    server = start_server(store.root, tmp_path / "serve.log", LSTM_MAX_DISCARD_BYTES=str(20_000_000))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
            sock.sendall(f"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: {BIG}\r\n\r\n".encode())
            sock.sendall(b" " * 10_000)  # a start: the answer must not wait for the other 23.99 MB
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                assert data, answer
                answer += data
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 413") and b"connection: close" in head, head
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        stop(server)


def test_a_client_that_waits_for_100_continue_gets_the_413_without_sending(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("content-type", "application/json")
        connection.putheader("content-length", str(BIG))
        connection.putheader("expect", "100-continue")
        connection.endheaders()  # and no body: the server must not wait for it
        response = connection.getresponse()
        assert_413(response.status, response.read(), chunked=False)
        assert response.getheader("connection") == "close"
    finally:
        connection.close()
