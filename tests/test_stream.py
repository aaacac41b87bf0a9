"""WebSocket streams (WS /v2/models/{name}/stream) against real lstm-serve processes: chunked equals one-shot,
streams never mix, every bad message's close code, the stream limit, idle and shutdown closes, Client.stream."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lstm_client import BusyError, Client, ClientError, NotFoundError, StreamClosedError
from starlette.types import Receive, Scope, Send
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

import model_store
from benchmarks import harness
from service import Settings, create_app
from service.stream_codec import close_reason, decode_text
from tests.conftest import make_client, save_tiny, wait_for
from tests.test_e2e import Server, start_server, stop

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5
MAX_BODY = 4096  # bytes: the servers' LSTM_MAX_BODY_BYTES, so that 1009 is cheap to reach
MAX_ELEMENTS = 200  # the servers' LSTM_MAX_ELEMENTS
TIMEOUT = 60.0  # seconds any single receive may take on a busy machine


@pytest.fixture(scope="module")
def stream_store(tmp_path_factory: pytest.TempPathFactory) -> model_store.ModelStore:
    """`lstm`: version 1 and 2 (serving) with the state-carrying method; `legacy`: a version exported before it."""
    store = model_store.ModelStore(tmp_path_factory.mktemp("stream") / "store")
    save_tiny(store, seed=1, stateful=True)
    save_tiny(store, seed=2, stateful=True, hidden_size=6)
    save_tiny(store, name="legacy", seed=3)
    return store


def serve(store: model_store.ModelStore, log: Path, *flags: str) -> Server:
    limits = ("--max-body-bytes", str(MAX_BODY), "--max-elements", str(MAX_ELEMENTS))
    return start_server(store.root, log, flags=(*limits, *flags))


@pytest.fixture(scope="module")
def server(stream_store: model_store.ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = serve(stream_store, tmp_path_factory.mktemp("logs") / "serve.log")
    yield running
    stop(running)


def ws_url(server: Server, path: str = "/v2/models/lstm/stream") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


@contextlib.contextmanager
def open_stream(server: Server, path: str = "/v2/models/lstm/stream") -> Iterator[ClientConnection]:
    with connect(ws_url(server, path), open_timeout=TIMEOUT, max_size=None, proxy=None) as ws:
        yield ws


def sines(length: int, offset: float = 0.0) -> np.ndarray:
    x: np.ndarray = np.sin(offset + 0.3 * np.arange(length)).astype(np.float32)
    return x  # (length,)


def one_shot(server: Server, x: np.ndarray, version: int | None = None) -> np.ndarray:
    """/predict of the whole sequence: (length,) outputs."""
    body: dict[str, Any] = {"inputs": x.reshape(-1, 1, 1).tolist()}
    if version is not None:
        body["version"] = version
    answer = httpx.post(f"{server.url}/predict", json=body, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return np.asarray(answer.json()["outputs"], dtype=np.float32).reshape(-1)


def one_shot_version(server: Server) -> int:
    """The version /predict answers with now."""
    version: int = httpx.post(f"{server.url}/predict", json={"inputs": [[[0.1]]]}, timeout=TIMEOUT).json()["version"]
    return version


def reply_outputs(reply: str | bytes) -> np.ndarray:
    """A reply's outputs (seq,): binary float32, or the text reply's list."""
    if isinstance(reply, bytes):
        return np.frombuffer(reply, dtype="<f4")
    return np.asarray(json.loads(reply)["outputs"], dtype=np.float32)


def chunks_of(x: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    bounds = [0, *cuts, len(x)]
    return [x[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def stream_chunks(ws: ClientConnection, chunks: list[np.ndarray], binary: bool, end: bool) -> np.ndarray:
    """Send each chunk and read its reply; the outputs concatenated (length,)."""
    outputs = []
    for i, chunk in enumerate(chunks):
        last = end and i == len(chunks) - 1
        if binary:
            ws.send(chunk.astype("<f4").tobytes())
            reply = ws.recv(TIMEOUT)
            assert isinstance(reply, bytes)
            outputs.append(np.frombuffer(reply, dtype="<f4"))
        else:
            ws.send(json.dumps({"samples": chunk.tolist(), **({"end": True} if last else {})}))
            answer = json.loads(ws.recv(TIMEOUT))
            assert (answer["model"], answer["step"], answer["end"]) == ("lstm", i + 1, last), answer
            assert len(answer["outputs"]) == len(chunk)
            outputs.append(np.asarray(answer["outputs"], dtype=np.float32))
    return np.concatenate(outputs)


def close_of(ws: ClientConnection) -> tuple[int, str]:
    """Wait for the server's close: its code and reason (messages before it are skipped)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(TIMEOUT)
    assert closed.value.rcvd is not None, "the server sent no close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def metric(server: Server, name: str) -> float:
    """The sum of a metric's samples in /metrics (0 when absent)."""
    text = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@st.composite
def chunkings(draw: st.DrawFn) -> tuple[int, list[int]]:
    length = draw(st.integers(1, 80))
    cuts = draw(st.lists(st.integers(1, max(1, length - 1)), max_size=12, unique=True)) if length > 1 else []
    return length, sorted(cuts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunking=chunkings(), binary=st.booleans(), offset=st.floats(0, 6.28))
def test_a_chunked_stream_equals_one_shot_predict(
    server: Server, chunking: tuple[int, list[int]], binary: bool, offset: float
) -> None:
    length, cuts = chunking
    x = sines(length, offset)
    with open_stream(server) as ws:
        streamed = stream_chunks(ws, chunks_of(x, cuts), binary, end=False)
    np.testing.assert_allclose(streamed, one_shot(server, x), atol=TOLERANCE, rtol=0)


def test_a_version_stream_keeps_that_version_and_ends_with_1000(server: Server) -> None:
    x = sines(30, 1.0)
    with open_stream(server, "/v2/models/lstm/versions/1/stream") as ws:
        ws.send(json.dumps({"samples": x[:10].tolist()}))
        first = json.loads(ws.recv(TIMEOUT))
        ws.send(json.dumps({"samples": [[v] for v in x[10:].tolist()], "end": True}))  # the nested form
        last = json.loads(ws.recv(TIMEOUT))
        assert (first["version"], last["version"], last["end"]) == (1, 1, True)
        assert first["sequence_id"] == last["sequence_id"] and first["sequence_id"].startswith("ws-")
        assert close_of(ws) == (1000, "the sequence ended")
    streamed = np.asarray(first["outputs"] + last["outputs"], dtype=np.float32)
    np.testing.assert_allclose(streamed, one_shot(server, x, version=1), atol=TOLERANCE, rtol=0)
    assert not np.allclose(streamed, one_shot(server, x), atol=1e-3)  # version 2 differs: the version was kept


def test_end_alone_closes_with_1000(server: Server) -> None:
    with open_stream(server) as ws:
        ws.send(json.dumps({"samples": [0.1, 0.2]}))
        ws.recv(TIMEOUT)
        ws.send(json.dumps({"end": True}))
        assert close_of(ws) == (1000, "the sequence ended")


def test_concurrent_streams_never_mix(server: Server) -> None:
    """Eight streams step at once (their steps share forwards in the sequence batcher); each equals its one-shot."""
    count, length = 8, 40
    inputs = [sines(length, offset=0.7 * i) for i in range(count)]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        rng = np.random.default_rng(i)
        cuts = sorted(set(rng.integers(1, length, size=8).tolist()))
        try:
            with open_stream(server) as ws:
                barrier.wait(TIMEOUT)
                results[i] = stream_chunks(ws, chunks_of(inputs[i], cuts), binary=bool(i % 2), end=True)
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 4)
    assert not errors, errors
    for i in range(count):
        np.testing.assert_allclose(results[i], one_shot(server, inputs[i]), atol=TOLERANCE, rtol=0)


BAD_TEXT: list[tuple[str, int, str]] = [  # message, close code, a phrase of the error that says what was expected
    ("not json", 4422, "a JSON object"),
    ("[0.1, 0.2]", 4422, "a JSON object"),
    ('{"samples": [0.1], "extra": 1}', 4422, "expected 'samples' and optional 'end'"),
    ('{"end": false}', 4422, "missing 'samples'"),
    ('{"samples": "0.1"}', 4422, "non-empty list of finite numbers"),
    ('{"samples": []}', 4422, "'samples' is empty"),
    ('{"samples": [0.1, true]}', 4422, "only numbers were expected"),
    ('{"samples": [0.1, null]}', 4422, "only numbers were expected"),
    ('{"samples": [0.1, "x"]}', 4422, "only numbers were expected"),
    ('{"samples": [1e39]}', 4422, "finite float32 numbers were expected"),
    ('{"samples": [NaN]}', 4422, "a JSON object"),  # JSON has no NaN
    ('{"samples": [[0.1, 0.2]]}', 4422, "shape [seq, 1]"),
    ('{"samples": [[0.1], 0.2]}', 4422, "ragged"),
    ('{"samples": [[[0.1]]]}', 4422, "shape [seq, 1]"),
    ('{"samples": [0.1], "end": "yes"}', 4422, "true or false was expected"),
    (json.dumps({"samples": [0.0] * (MAX_ELEMENTS + 1)}), 4413, f"at most {MAX_ELEMENTS} are accepted"),
]


@pytest.mark.parametrize(("message", "code", "expected"), BAD_TEXT, ids=[case[0][:30] for case in BAD_TEXT])
def test_a_bad_text_message_gets_an_error_reply_and_its_close_code(
    server: Server, message: str, code: int, expected: str
) -> None:
    with open_stream(server) as ws:
        ws.send(json.dumps({"samples": [0.5]}))  # a live sequence first: the error ends it too
        ws.recv(TIMEOUT)
        ws.send(message)
        error = json.loads(ws.recv(TIMEOUT))
        assert error["status"] == code - 4000 and expected in error["error"], error
        assert close_of(ws) == (code, close_reason(error["error"]))


BAD_BINARY: list[tuple[bytes, int, str]] = [
    (b"\x00\x00\x80", 4422, "little-endian float32 values, 1 per step"),
    (np.array([0.1, np.nan], dtype="<f4").tobytes(), 4422, "finite float32 numbers were expected"),
    (np.array([np.inf], dtype="<f4").tobytes(), 4422, "finite float32 numbers were expected"),
    (np.zeros(MAX_ELEMENTS + 1, dtype="<f4").tobytes(), 4413, f"at most {MAX_ELEMENTS} are accepted"),
]


@pytest.mark.parametrize(("message", "code", "expected"), BAD_BINARY, ids=["3 bytes", "nan", "inf", "too many"])
def test_a_bad_binary_message_gets_an_error_reply_and_its_close_code(
    server: Server, message: bytes, code: int, expected: str
) -> None:
    with open_stream(server) as ws:
        ws.send(message)
        error = json.loads(ws.recv(TIMEOUT))
        assert error["status"] == code - 4000 and expected in error["error"], error
        assert close_of(ws) == (code, close_reason(error["error"]))


@pytest.mark.parametrize("binary", [False, True])
def test_a_message_over_the_body_limit_closes_with_1009(server: Server, binary: bool) -> None:
    with open_stream(server) as ws:
        ws.send(b"\x00" * (MAX_BODY + 4) if binary else json.dumps({"samples": [0.123456789] * 400}))
        code, _ = close_of(ws)
        assert code == 1009


REFUSED: list[tuple[str, int, str]] = [  # path, HTTP status, a phrase of the error
    ("/v2/models/nope/stream", 404, "model 'nope' not found"),
    ("/v2/models/lstm/versions/9/stream", 404, "version 9"),
    ("/v2/models/lstm/versions/0/stream", 422, "version"),
    ("/v2/models/lstm/versions/NotAnAlias!/stream", 422, "neither a positive integer nor an alias"),
    ("/v2/models/legacy/stream", 409, "exported before sequence support"),
]


@pytest.mark.parametrize(("path", "status", "expected"), REFUSED, ids=[case[0] for case in REFUSED])
def test_a_stream_that_cannot_be_served_is_refused_at_the_handshake(
    server: Server, path: str, status: int, expected: str
) -> None:
    with pytest.raises(InvalidStatus) as refused, open_stream(server, path):
        pass
    response = refused.value.response
    assert response.status_code == status
    assert expected in json.loads(response.body or b"{}")["error"]


def test_closes_are_counted_by_code_and_open_streams_return_to_zero(server: Server) -> None:
    before = metric(server, 'lstm_stream_closes_total{code="4422"}')
    with open_stream(server) as ws:
        assert wait_for(lambda: metric(server, "lstm_streams_open") >= 1, TIMEOUT)
        ws.send("{}")
        close_of(ws)
    assert wait_for(lambda: metric(server, 'lstm_stream_closes_total{code="4422"}') == before + 1, TIMEOUT)
    assert wait_for(lambda: metric(server, "lstm_streams_open") == 0, TIMEOUT)


def test_a_clients_own_close_code_is_counted_by_kind_not_by_value(server: Server) -> None:
    """A client may close with any 4xxx code: the metric's labels stay bounded."""
    before = (
        metric(server, 'lstm_stream_closes_total{code="other"}'),
        metric(server, 'lstm_stream_closes_total{code="1000"}'),
    )
    with open_stream(server) as ws:
        ws.close(4999, "my own code")
    with open_stream(server) as ws:
        ws.close(1000)
    assert wait_for(lambda: metric(server, 'lstm_stream_closes_total{code="other"}') == before[0] + 1, TIMEOUT)
    assert wait_for(lambda: metric(server, 'lstm_stream_closes_total{code="1000"}') == before[1] + 1, TIMEOUT)
    assert 'code="4999"' not in httpx.get(f"{server.url}/metrics", timeout=TIMEOUT).text


def test_a_closed_stream_frees_its_sequence(server: Server) -> None:
    before = metric(server, "lstm_sequences_live")
    with open_stream(server) as ws:
        ws.send(json.dumps({"samples": [0.1]}))
        ws.recv(TIMEOUT)
        assert metric(server, "lstm_sequences_live") == before + 1
    assert wait_for(lambda: metric(server, "lstm_sequences_live") == before, TIMEOUT)


def test_a_stream_keeps_its_version_across_a_promotion(tmp_path: Path) -> None:
    """Its own store and server: the promotion must not move the other tests' serving version."""
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1, stateful=True)
    save_tiny(store, seed=2, stateful=True, hidden_size=6)
    running = start_server(store.root, tmp_path / "serve.log")
    try:
        x = sines(20, 0.2)
        before = one_shot(running, x)  # version 2 serves
        with open_stream(running) as ws:
            ws.send(json.dumps({"samples": x[:8].tolist()}))
            first = json.loads(ws.recv(TIMEOUT))
            promoted = httpx.put(f"{running.url}/models/lstm/aliases/production", json={"version": 1}, timeout=TIMEOUT)
            assert promoted.status_code == 200, promoted.text
            assert wait_for(
                lambda: httpx.post(f"{running.url}/predict", json={"inputs": [[[0.1]]]}).json()["version"] == 1
            )
            ws.send(json.dumps({"samples": x[8:].tolist()}))
            last = json.loads(ws.recv(TIMEOUT))
        assert (first["version"], last["version"]) == (2, 2)
        streamed = np.asarray(first["outputs"] + last["outputs"], dtype=np.float32)
        np.testing.assert_allclose(streamed, before, atol=TOLERANCE, rtol=0)
        with open_stream(running) as ws:  # a new stream starts on the promoted version
            ws.send(json.dumps({"samples": [0.1]}))
            assert json.loads(ws.recv(TIMEOUT))["version"] == 1
    finally:
        stop(running)


def test_streams_on_two_workers_each_equal_one_shot(stream_store: model_store.ModelStore, tmp_path: Path) -> None:
    """Each stream stays in the worker that accepted its connection; the kernel spreads connections over both."""
    running = start_server(stream_store.root, tmp_path / "serve.log", workers=2)
    try:
        x = sines(30, 0.9)
        expected = one_shot(running, x)
        for i in range(6):  # fresh connections, one stream each, interleaved two at a time
            binary = bool(i % 2)
            with open_stream(running) as a, open_stream(running) as b:
                outputs: list[list[np.ndarray]] = [[], []]
                for chunk in chunks_of(x, [3, 10, 11, 25]):
                    for ws in (a, b):
                        ws.send(chunk.astype("<f4").tobytes() if binary else json.dumps({"samples": chunk.tolist()}))
                    for ws, into in zip((a, b), outputs, strict=True):
                        into.append(reply_outputs(ws.recv(TIMEOUT)))
            for streamed in outputs:
                np.testing.assert_allclose(np.concatenate(streamed), expected, atol=TOLERANCE, rtol=0)
    finally:
        stop(running)


# ---- limits, idle time and shutdown: servers of their own ----------------------------------------------------


@pytest.fixture(scope="module")
def limited(stream_store: model_store.ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = serve(stream_store, tmp_path_factory.mktemp("limited") / "serve.log", "--max-streams", "2")
    yield running
    stop(running)


def test_streams_over_the_limit_are_refused_with_429_before_accept(limited: Server) -> None:
    with open_stream(limited) as first, open_stream(limited):
        with pytest.raises(InvalidStatus) as refused, open_stream(limited):
            pass
        assert refused.value.response.status_code == 429
        assert "LSTM_MAX_STREAMS" in json.loads(refused.value.response.body or b"{}")["error"]
        with Client(limited.url) as client, pytest.raises(BusyError, match="LSTM_MAX_STREAMS"):
            client.stream()
        first.close()

        def accepted() -> bool:
            try:
                with open_stream(limited):
                    pass
            except InvalidStatus:
                return False
            return True

        assert wait_for(accepted, TIMEOUT)  # the server noticed the close and gave the slot back
    assert wait_for(lambda: metric(limited, 'lstm_stream_closes_total{code="4429"}') >= 2, TIMEOUT)


@pytest.fixture(scope="module")
def short_idle(stream_store: model_store.ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("idle") / "serve.log"
    running = serve(stream_store, log, "--sequence-idle-timeout", "1")
    yield running
    stop(running)


@pytest.mark.parametrize("started", [False, True])
def test_an_idle_stream_closes_with_4408(short_idle: Server, started: bool) -> None:
    with open_stream(short_idle) as ws:
        if started:
            ws.send(json.dumps({"samples": [0.1, 0.2]}))
            ws.recv(TIMEOUT)
        code, reason = close_of(ws)
    assert code == 4408 and "LSTM_SEQUENCE_IDLE_TIMEOUT" in reason
    assert wait_for(lambda: metric(short_idle, "lstm_sequences_live") == 0, TIMEOUT)


def test_server_shutdown_closes_open_streams_with_1012(stream_store: model_store.ModelStore, tmp_path: Path) -> None:
    running = serve(stream_store, tmp_path / "serve.log")
    try:
        with open_stream(running) as ws:
            ws.send(json.dumps({"samples": [0.1, 0.2]}))
            ws.recv(TIMEOUT)
            stopping = threading.Thread(target=harness.stop, args=(running,))
            stopping.start()
            assert close_of(ws)[0] == 1012
            stopping.join(TIMEOUT * 2)
        assert running.process.returncode == 0, running.log_text()[-3000:]
    finally:
        stop(running)


# ---- the Python client ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_client_stream_equals_one_shot_predict(server: Server, binary: bool) -> None:
    x = sines(25, 0.4)
    with Client(server.url) as client, client.stream("lstm", binary=binary) as stream:
        first = stream.step(x[:1])  # one sample, the sensor's way
        assert first.outputs.shape == (1, 1) and first.step == 1
        for chunk in (x[1:4], x[4:9].reshape(-1, 1), x[9:15].reshape(-1, 1, 1)):  # (seq,), (seq, 1), (seq, 1, 1)
            stream.send(chunk)
        with pytest.raises(RuntimeError, match="not read yet"):
            stream.step(x[15:])  # its reply would come after the three unread ones
        rest = [step.outputs for step in stream]  # the three replies, in order
        last = stream.step(x[15:])
        streamed = np.concatenate([first.outputs, *rest, last.outputs]).reshape(-1)
        if binary:
            assert last.model is None and last.step == 5
        else:
            assert (last.model, last.version, last.step) == ("lstm", 2, 5) and stream.sequence_id
            assert stream.step([0.3], end=True).end  # the text form can end the sequence with its last chunk
        stream.end()
        assert stream.close_code == 1000
    np.testing.assert_allclose(streamed, one_shot(server, x), atol=TOLERANCE, rtol=0)


def test_client_stream_raises_the_servers_errors(server: Server) -> None:
    with Client(server.url) as client:
        with pytest.raises(NotFoundError, match="model 'nope' not found"):
            client.stream("nope")
        with pytest.raises(ClientError, match="exported before sequence support") as refused:
            client.stream("legacy")
        assert refused.value.status == 409
        with client.stream("lstm", version=1) as stream:
            with pytest.raises(ClientError, match=r"shape \[seq, 1\]") as bad:
                stream.step([[0.1, 0.2]])  # two numbers per step: the model reads one
            assert bad.value.status == 422
            with pytest.raises(ClientError, match=r"shape \[seq, 1\]"):  # the stream is closed: the same error
                stream.step([0.1])
        with client.stream("lstm") as stream:
            with pytest.raises(ClientError) as too_many:
                stream.step(np.zeros(MAX_ELEMENTS + 1))
            assert too_many.value.status == 413
        with client.stream("lstm") as stream, pytest.raises(StreamClosedError) as too_big:
            stream.step(np.full(MAX_BODY, 0.123456789))
        assert too_big.value.code == 1009


def test_without_the_denial_extension_a_refusal_is_an_accepted_stream_closed_with_its_code(
    stream_store: model_store.ModelStore,
) -> None:
    """A server that cannot answer a handshake with HTTP (no ASGI websocket.http.response) gets 4000 + status."""
    app = create_app(Settings(store_dir=stream_store.root, poll_interval=0.05))

    async def without_denial(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "extensions": {}}
        await app(scope, receive, send)

    with TestClient(without_denial) as client, client.websocket_connect("/v2/models/nope/stream") as ws:
        error = json.loads(ws.receive_text())
        assert error == {"error": "model 'nope' not found", "status": 404}
        closed = ws.receive()
        assert (closed["code"], closed["reason"]) == (4404, "model 'nope' not found")


def test_a_server_without_a_message_limit_of_its_own_still_closes_an_oversized_message_with_1009(
    stream_store: model_store.ModelStore,
) -> None:
    """TestClient, unlike uvicorn, has no ws_max_size: the route checks LSTM_MAX_BODY_BYTES itself."""
    with (
        make_client(stream_store, max_body_bytes=1024) as client,
        client.websocket_connect("/v2/models/lstm/stream") as ws,
    ):
        ws.send_text(json.dumps({"samples": [0.25] * 300}))  # 1,813 characters
        closed = ws.receive()
        assert closed["code"] == 1009
        assert closed["reason"] == "message of 1813 bytes is over the limit of 1024 bytes (LSTM_MAX_BODY_BYTES)"


def test_every_middleware_passes_a_stream_through(stream_store: model_store.ModelStore) -> None:
    """Request id, metrics, body limit, content type and CORS (on here) each handle HTTP only."""
    headers = {"x-request-id": "abc", "origin": "http://example.org", "content-type": "text/plain"}
    with (
        make_client(stream_store, cors_origins=["http://example.org"]) as client,
        client.websocket_connect("/v2/models/lstm/stream", headers=headers) as ws,
    ):
        ws.send_text(json.dumps({"samples": [0.1, 0.2], "end": True}))
        reply = json.loads(ws.receive_text())
        assert (len(reply["outputs"]), reply["version"], reply["end"]) == (2, 2, True)
        assert ws.receive()["code"] == 1000


def test_decode_text_names_the_width_for_wider_models() -> None:
    # Not reachable with the sine models (input size 1), so checked on the codec.
    message = decode_text('{"samples": [[1, 2], [3, 4]]}', input_size=2, max_elements=10)
    assert message.samples is not None and message.samples.shape == (2, 1, 2)
    with pytest.raises(Exception, match="2-number lists"):
        decode_text('{"samples": [1, 2]}', input_size=2, max_elements=10)
