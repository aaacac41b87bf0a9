"""Sequences over several workers: the peer wire format, the owner hash, and a real lstm-serve --workers 2 whose
chunks arrive over fresh connections (forwarded to the owner, exact) and whose owner is killed -9 (a clear 409/503)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
import pytest
from prometheus_client import REGISTRY

import model_store
from benchmarks import harness
from service import Settings
from service.components import Components
from service.errors import (
    InvalidInputError,
    NotReadyError,
    SequenceLostError,
    SequenceStateError,
    ServiceError,
    status_for,
)
from service.peers import Peers, owner_of
from service.sequence_types import SequenceOutput, SequenceStep
from service.sequence_wire import (
    PREFIX,
    EndRequest,
    Frame,
    WireError,
    answer_of,
    encode_answer,
    encode_request,
    read_frame,
    request_of,
)
from tests.conftest import save_tiny, wait_for
from tests.test_e2e import Server, start_server, stop

MAX_BODY = 4 * 1_000_000


def read_all(data: bytes, max_body: int = MAX_BODY) -> list[Frame]:
    """Every frame of `data`, through the reader a connection uses."""

    async def run() -> list[Frame]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        frames = []
        while (frame := await read_frame(reader, max_body)) is not None:
            frames.append(frame)
        return frames

    return asyncio.run(run())


def raw_frame(header: object, body: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return PREFIX.pack(len(head), len(body)) + head + body


# ---- the wire format -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sequence_id", ["sensor-7", "é" * 300, 7, 2**64 - 1])
@pytest.mark.parametrize("version", [None, 3, "production"])
def test_a_step_round_trips_with_its_samples_bit_for_bit(sequence_id: str | int, version: int | str | None) -> None:
    samples = np.random.default_rng(0).standard_normal((5, 1, 1)).astype(np.float32)
    step = SequenceStep("lstm", version, sequence_id, start=True, end=False, samples=samples)
    (frame,) = read_all(encode_request(41, step))
    request_id, decoded = request_of(frame)
    assert request_id == 41
    assert isinstance(decoded, SequenceStep)
    assert (decoded.model, decoded.version, decoded.sequence_id) == ("lstm", version, sequence_id)
    assert type(decoded.sequence_id) is type(sequence_id)  # 7 and "7" are different sequences
    assert (decoded.start, decoded.end) == (True, False)
    assert decoded.samples.dtype == np.float32 and decoded.samples.shape == (5, 1, 1)
    assert decoded.samples.tobytes() == samples.tobytes()
    decoded.samples[0, 0, 0] = 1.0  # a writable array of its own, not a view of the frame's bytes


@pytest.mark.parametrize("shape", [(2, 3, 1), (0, 1, 1), (4,)])
def test_a_step_of_any_shape_travels_so_the_owner_answers_it_as_its_own(shape: tuple[int, ...]) -> None:
    samples = np.ones(shape, dtype=np.float32)
    (frame,) = read_all(encode_request(1, SequenceStep("lstm", None, "a", True, False, samples)))
    _, decoded = request_of(frame)
    assert isinstance(decoded, SequenceStep) and decoded.samples.shape == shape


def test_an_end_an_output_and_an_ended_round_trip_on_one_stream() -> None:
    outputs = np.linspace(-1, 1, 12, dtype=np.float32).reshape(12, 1, 1)
    data = (
        encode_request(1, EndRequest("lstm", "a"))
        + encode_answer(2, SequenceOutput("lstm", 4, "a", outputs))
        + encode_answer(3, True)
        + encode_answer(4, False)
    )
    end, output, found, missing = read_all(data)
    assert request_of(end) == (1, EndRequest("lstm", "a"))
    request_id, answer = answer_of(output)
    assert request_id == 2 and isinstance(answer, SequenceOutput)
    assert (answer.model, answer.version, answer.sequence_id) == ("lstm", 4, "a")
    assert answer.outputs.tobytes() == outputs.tobytes()
    assert answer_of(found) == (3, True)
    assert answer_of(missing) == (4, False)


@pytest.mark.parametrize(
    "error",
    [
        SequenceStateError("sequence 'a' of model 'lstm' is not live"),
        SequenceLostError("worker 1 is gone"),
        InvalidInputError("expected a batch of 1"),
        NotReadyError("no model is loaded"),
        model_store.VersionNotFoundError("model 'lstm' has no version 9"),
        model_store.DamagedVersionError("lstm", "3/manifest.json", "not JSON", 3),
        model_store.StorageError("storage failure while reading: EIO", 5),
    ],
)
def test_an_error_keeps_its_class_message_and_so_its_status(error: Exception) -> None:
    (frame,) = read_all(encode_answer(9, error))
    request_id, answer = answer_of(frame)
    assert request_id == 9
    assert type(answer) is type(error)
    assert str(answer) == str(error)
    assert status_for(answer) == status_for(error)


def test_an_error_of_a_class_not_known_here_is_a_500_with_its_message() -> None:
    (frame,) = read_all(raw_frame({"kind": "error", "id": 1, "error": "KeyError", "message": "boom"}))
    _, answer = answer_of(frame)
    assert type(answer) is ServiceError and str(answer) == "boom" and status_for(answer) == 500


def test_a_connection_closed_between_frames_is_the_end_and_inside_one_an_error() -> None:
    data = encode_request(1, EndRequest("lstm", 5))
    assert len(read_all(data)) == 1
    for cut in (1, PREFIX.size, PREFIX.size + 3, len(data) - 1):
        with pytest.raises(asyncio.IncompleteReadError):
            read_all(data + data[:cut])


STEP = {
    "kind": "step",
    "id": 1,
    "model": "lstm",
    "version": None,
    "sequence_id": "a",
    "start": True,
    "end": False,
    "shape": [2, 1, 1],
}
TWO_SAMPLES = np.zeros(2, dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (struct.pack(">II", 0, 0), "header of 0 bytes"),
        (struct.pack(">II", 1 << 20, 0), "header of 1048576 bytes"),
        (struct.pack(">II", 2, MAX_BODY + 1) + b"{}", "body of 4000001 bytes"),
        (raw_frame(STEP, TWO_SAMPLES[:4]), "body of 4 bytes (expected 8)"),
        (raw_frame(STEP), "body of 0 bytes (expected 8)"),
        (raw_frame({**STEP, "shape": [2, -1, 1]}), "not one of the kinds"),
        (raw_frame({**STEP, "shape": [1] * 9}, np.zeros(1, "<f4").tobytes()), "not one of the kinds"),
        (raw_frame({**STEP, "shape": 2}, TWO_SAMPLES), "not one of the kinds"),
        (raw_frame({**STEP, "sequence_id": ""}, TWO_SAMPLES), "not one of the kinds"),
        (raw_frame({**STEP, "sequence_id": 0}, TWO_SAMPLES), "not one of the kinds"),
        (raw_frame({**STEP, "sequence_id": True}, TWO_SAMPLES), "not one of the kinds"),
        (raw_frame({**STEP, "start": "yes"}, TWO_SAMPLES), "not one of the kinds"),
        (raw_frame({**STEP, "extra": 1}, TWO_SAMPLES), "not one of the kinds"),
        (raw_frame({**STEP, "kind": "launch"}, TWO_SAMPLES), "not one of the kinds"),
        (raw_frame({"kind": "ended", "id": -1, "found": True}), "not one of the kinds"),
        (raw_frame([1, 2]), "not one of the kinds"),
        (struct.pack(">II", 3, 0) + b"{x}", "not one of the kinds"),
        (raw_frame({"kind": "ended", "id": 1, "found": True}, b"\0\0\0\0"), "body of 4 bytes (expected 0)"),
    ],
)
def test_a_malformed_frame_is_refused_with_what_is_wrong(data: bytes, says: str) -> None:
    with pytest.raises(WireError, match=re.escape(says)):
        read_all(data)


def test_an_answer_where_a_request_belongs_and_the_reverse_are_refused() -> None:
    (answer,) = read_all(encode_answer(1, True))
    with pytest.raises(WireError, match="ended frame where a request was expected"):
        request_of(answer)
    (request,) = read_all(encode_request(1, EndRequest("lstm", "a")))
    with pytest.raises(WireError, match="end frame where an answer was expected"):
        answer_of(request)


# ---- the owner of a sequence ----------------------------------------------------------------------------------


def test_the_owner_is_the_same_in_every_process_and_spreads_ids_over_the_workers() -> None:
    # Python's hash() of a str is salted per process: every worker must work out the same owner.
    ids = [f"s{i}" for i in range(32)] + list(range(1, 33))
    here = [owner_of("lstm", sequence_id, 3) for sequence_id in ids]
    code = f"from service.peers import owner_of; print([owner_of('lstm', i, 3) for i in {ids!r}])"
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code], env=os.environ | {"PYTHONHASHSEED": seed}, capture_output=True, check=True
        )
        assert orjson.loads(done.stdout) == here
    owners = [owner_of("lstm", f"sensor-{i}", 4) for i in range(400)]
    assert all(owners.count(index) > 50 for index in range(4))
    assert {owner_of("lstm", i, 1) for i in range(1, 50)} == {0}
    # The integer 7 and the string "7" are distinct sequences; some pairs of them land apart.
    assert any(owner_of("lstm", i, 2) != owner_of("lstm", str(i), 2) for i in range(1, 50))


def test_peers_name_one_socket_per_worker_in_their_folder() -> None:
    peers = Peers(0, 3, Path("/run/x"))
    assert [peers.socket_path(i).name for i in range(3)] == ["worker-0.sock", "worker-1.sock", "worker-2.sock"]
    assert peers.at(2, 1) == Peers(2, 3, Path("/run/x"), starts=1)
    with pytest.raises(ValueError, match="not in 0..2"):
        Peers(3, 3, Path("/run/x"))


# ---- routers and peer servers in one process -------------------------------------------------------------------


@pytest.fixture
def peer_dir() -> Iterator[Path]:
    """A private folder for peer sockets, short enough for a Unix socket address (pytest's tmp_path may not be)."""
    directory = Path(tempfile.mkdtemp(prefix="lstm-peers-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def stateful_store(root: Path) -> model_store.ModelStore:
    store = model_store.ModelStore(root)
    save_tiny(store, seed=3, stateful=True)
    return store


async def open_worker(store: model_store.ModelStore, peers: Peers | None, **overrides: Any) -> Components:
    settings = Settings(store_dir=store.root, **overrides)
    components = await Components.open(settings, peers)
    await components.poller.refresh()
    return components


def chunked(x: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return [part.reshape(-1, 1, 1) for part in np.split(x, cuts)]


def test_two_workers_in_one_process_run_each_sequence_on_its_owner_exactly(tmp_path: Path, peer_dir: Path) -> None:
    store = stateful_store(tmp_path / "store")

    async def run() -> None:
        workers = [await open_worker(store, Peers(index, 2, peer_dir)) for index in range(2)]
        try:
            ids = ids_owned_by(0, 3, "p") + ids_owned_by(1, 3, "q")
            for n, sequence_id in enumerate(ids):
                x = sine(25, 0.2 * n)
                outputs = []
                for position, part in enumerate(chunked(x, [1, 7, 8, 19])):
                    plane = workers[(position + n) % 2].dataplane  # alternate: every chunk on the other worker
                    step = SequenceStep("lstm", None, sequence_id, position == 0, position == 4, part)
                    outputs.append((await plane.sequence_step(step)).outputs)
                    if position == 0:  # the state lives on the owner alone
                        owner = owner_of("lstm", sequence_id, 2)
                        assert [("lstm", sequence_id) in worker.dataplane.sequences for worker in workers] == [
                            index == owner for index in range(2)
                        ]
                served = await workers[0].dataplane.model_for("lstm", None)
                whole = await workers[0].dataplane.infer(served, x.reshape(-1, 1, 1))
                np.testing.assert_allclose(np.concatenate(outputs), whole, atol=TOLERANCE)
            assert [len(worker.dataplane.sequences) for worker in workers] == [0, 0]  # each ended by its last chunk
            # A live one: ending it from the other worker frees it on the owner.
            sequence_id = ids[0]
            start = SequenceStep("lstm", None, sequence_id, True, False, sine(3, 0).reshape(-1, 1, 1))
            await workers[1].dataplane.sequence_step(start)
            assert await workers[1].dataplane.end_sequence("lstm", sequence_id) is True
            assert await workers[1].dataplane.end_sequence("lstm", sequence_id) is False
        finally:
            for worker in workers:
                await worker.close()

    asyncio.run(run())


def test_a_restarted_owner_says_so_when_a_chunk_finds_no_live_sequence(tmp_path: Path, peer_dir: Path) -> None:
    store = stateful_store(tmp_path / "store")

    async def run() -> None:
        first = await open_worker(store, Peers(0, 2, peer_dir))
        successor = await open_worker(store, Peers(1, 2, peer_dir, starts=1))  # the second process in place 1
        try:
            (sequence_id,) = ids_owned_by(1, 1, "r")
            step = SequenceStep("lstm", None, sequence_id, False, False, sine(3, 0).reshape(-1, 1, 1))
            for plane in (first.dataplane, successor.dataplane):  # forwarded, and on the owner itself
                with pytest.raises(SequenceStateError, match=r"is not live.*worker 1\) restarted at"):
                    await plane.sequence_step(step)
            (other,) = ids_owned_by(0, 1, "r")  # the first process of place 0 adds nothing
            with pytest.raises(SequenceStateError) as raised:
                await successor.dataplane.sequence_step(SequenceStep("lstm", None, other, False, False, step.samples))
            assert "restarted" not in str(raised.value)
        finally:
            await first.close()
            await successor.close()

    asyncio.run(run())


def test_one_worker_has_no_router_and_no_peer_socket(tmp_path: Path) -> None:
    store = stateful_store(tmp_path / "store")

    async def run() -> None:
        components = await open_worker(store, None)
        try:
            assert components.dataplane.router is None and components.peer_server is None
            step = SequenceStep("lstm", None, "solo", True, True, sine(3, 0).reshape(-1, 1, 1))
            assert (await components.dataplane.sequence_step(step)).outputs.shape == (3, 1, 1)
        finally:
            await components.close()

    asyncio.run(run())


def test_a_chunk_whose_forwarder_left_before_its_answer_has_its_sequence_discarded(
    tmp_path: Path, peer_dir: Path
) -> None:
    store = stateful_store(tmp_path / "store")
    (sequence_id,) = ids_owned_by(0, 1, "orphan")

    async def run() -> None:
        owner = await open_worker(store, Peers(0, 2, peer_dir))
        try:
            plane, server = owner.dataplane, owner.peer_server
            assert server is not None
            start = SequenceStep("lstm", None, sequence_id, True, False, sine(3, 0).reshape(-1, 1, 1))
            await plane.sequence_step(start)
            entry = plane.sequences.get("lstm", sequence_id)
            async with entry.lock:  # the forwarded chunk waits here until its forwarder has gone
                _, writer = await asyncio.open_unix_connection(server.path)
                step = SequenceStep("lstm", None, sequence_id, False, False, sine(2, 1).reshape(-1, 1, 1))
                writer.write(encode_request(1, step))
                await writer.drain()
                for _ in range(600):  # the owner has read the chunk
                    if server._connections:
                        break
                    await asyncio.sleep(0.05)
                writer.close()
                for _ in range(600):  # and seen the connection end
                    if not server._connections:
                        break
                    await asyncio.sleep(0.05)
                assert not server._connections
            for _ in range(600):
                if ("lstm", sequence_id) not in plane.sequences:
                    break
                await asyncio.sleep(0.05)
            # Its client cannot know whether the chunk ran: the next chunk is a 409, not a guess.
            with pytest.raises(SequenceStateError, match="ended"):
                await plane.sequence_step(step)
        finally:
            await owner.close()

    asyncio.run(run())


class FakePeer:
    """A peer socket that records the frames it gets and answers with `reply(frame)` (None: never)."""

    def __init__(self, path: Path, reply: Any) -> None:
        self.path, self.reply, self.connections = path, reply, 0
        self.frames: list[Frame] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> FakePeer:
        self.server = await asyncio.start_unix_server(self._serve, path=self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        with contextlib.suppress(Exception):
            while (frame := await read_frame(reader, MAX_BODY)) is not None:
                self.frames.append(frame)
                answer = self.reply(frame, connection)
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        writer.close()


def forwarded_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("lstm_sequence_forwarded_steps_total", {"outcome": outcome}) or 0.0


def test_a_forwarded_chunk_the_owner_does_not_answer_in_time_is_a_503_and_its_sequence_is_discarded(
    tmp_path: Path, peer_dir: Path
) -> None:
    store = stateful_store(tmp_path / "store")
    (sequence_id,) = ids_owned_by(1, 1, "slow")
    before = forwarded_count("timeout")

    async def run() -> None:
        async with FakePeer(Peers(0, 2, peer_dir).socket_path(1), lambda frame, connection: None) as owner:
            worker = await open_worker(store, Peers(0, 2, peer_dir), sequence_forward_timeout=0.5)
            try:
                step = SequenceStep("lstm", None, sequence_id, True, False, sine(4, 0).reshape(-1, 1, 1))
                with pytest.raises(SequenceLostError, match="did not answer within 0.5 s.*start it again"):
                    await worker.dataplane.sequence_step(step)
                # The owner is told to discard it: its client cannot know whether the chunk was applied.
                for _ in range(600):
                    if len(owner.frames) == 2:
                        break
                    await asyncio.sleep(0.05)
                assert [frame.header.kind for frame in owner.frames] == ["step", "end"]
                assert request_of(owner.frames[1])[1] == EndRequest("lstm", sequence_id)
            finally:
                await worker.close()

    asyncio.run(run())
    assert forwarded_count("timeout") == before + 1


def test_a_peer_that_answers_garbage_is_a_503_and_the_next_chunk_gets_a_fresh_connection(
    tmp_path: Path, peer_dir: Path
) -> None:
    store = stateful_store(tmp_path / "store")
    (sequence_id,) = ids_owned_by(1, 1, "garbage")

    def reply(frame: Frame, connection: int) -> bytes:
        request_id = frame.header.id
        if connection == 1:
            return struct.pack(">II", 5, 0) + b"hello"
        return encode_answer(request_id, SequenceStateError("sequence 'x' is not live"))

    async def run() -> None:
        async with FakePeer(Peers(0, 2, peer_dir).socket_path(1), reply) as owner:
            worker = await open_worker(store, Peers(0, 2, peer_dir))
            try:
                step = SequenceStep("lstm", None, sequence_id, False, False, sine(4, 0).reshape(-1, 1, 1))
                with pytest.raises(SequenceLostError, match="did not answer: the connection broke"):
                    await worker.dataplane.sequence_step(step)
                with pytest.raises(SequenceStateError, match="^sequence 'x' is not live$"):
                    await worker.dataplane.sequence_step(step)
                assert owner.connections == 2
            finally:
                await worker.close()

    asyncio.run(run())


# ---- a real lstm-serve --workers 2 --------------------------------------------------------------------------

TOLERANCE = 1e-5
INFER = "/v2/models/lstm/infer"


def sine(length: int, offset: float) -> np.ndarray:
    x: np.ndarray = np.sin(offset + 0.3 * np.arange(length)).astype(np.float32)
    return x


def chunk_body(x: np.ndarray, sequence_id: str | int, *, start: bool = False, end: bool = False) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [len(x), 1, 1], "data": x.tolist()}],
        "parameters": {"sequence_id": sequence_id, "sequence_start": start, "sequence_end": end},
    }


def send_chunk(server: Server, x: np.ndarray, sequence_id: str | int, **flags: bool) -> httpx.Response:
    """One chunk over a connection of its own (httpx.post opens one per call), so the kernel picks the worker."""
    try:
        return httpx.post(f"{server.url}{INFER}", json=chunk_body(x, sequence_id, **flags), timeout=60)
    except httpx.TransportError as exc:  # no answer at all is no clear error either: say what the server did
        raise AssertionError(f"{type(exc).__name__}: {exc}; the server's log:\n{server.log_text()[-5000:]}") from exc


def send_chunk_past_the_kill(server: Server, x: np.ndarray, sequence_id: str | int) -> httpx.Response:
    """send_chunk, right after a worker was killed: a connection the kernel had already queued on the dead worker's
    listening socket is reset with no answer (the chunk reached no live process, so nothing was applied); the
    client sees that failure, and a fresh connection gets the answer."""
    for _ in range(10):
        try:
            return httpx.post(f"{server.url}{INFER}", json=chunk_body(x, sequence_id), timeout=60)
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
            time.sleep(0.2)
    return send_chunk(server, x, sequence_id)


def outputs_of(answer: httpx.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    return np.array(answer.json()["outputs"][0]["data"], np.float32)


def one_shot(server: Server, x: np.ndarray) -> np.ndarray:
    answer = httpx.post(f"{server.url}/predict", json={"inputs": x.reshape(-1, 1, 1).tolist()}, timeout=60)
    assert answer.status_code == 200, answer.text
    return np.array(answer.json()["outputs"], np.float32).reshape(-1)


def forwarded(server: Server) -> dict[str, float]:
    """lstm_sequence_forwarded_steps_total by outcome, summed over the workers."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    found = re.findall(r'^lstm_sequence_forwarded_steps_total\{outcome="(\w+)"\} ([0-9.e+]+)$', text, re.MULTILINE)
    return {outcome: float(value) for outcome, value in found}


def peer_sockets(server: Server) -> dict[int, tuple[int, Path]]:
    """Worker index -> the pid that listens on its peer socket (worker-<index>.sock), and the socket's path."""
    found: dict[int, tuple[int, Path]] = {}
    for pid in harness.spawned_workers(server.process.pid):
        try:
            sockets = psutil.Process(pid).net_connections(kind="unix")
        except psutil.Error:
            continue
        for sock in sockets:
            match = re.search(r"/worker-(\d+)\.sock$", str(sock.laddr or ""))
            if match and not sock.raddr:
                found[int(match[1])] = (pid, Path(str(sock.laddr)))
    return found


def peer_socket_owners(server: Server) -> dict[int, int]:
    """Worker index -> the pid that listens on its peer socket."""
    return {index: pid for index, (pid, _) in peer_sockets(server).items()}


FIRST_LOAD = re.compile(r"\[(\d+)\]: serving lstm version \d+ \(first load\)")


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Server]:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=3, stateful=True)
    server = start_server(store.root, tmp_path / "serve.log", workers=2, LSTM_LOG_LEVEL="info")
    try:
        assert wait_for(lambda: sorted(peer_socket_owners(server)) == [0, 1]), harness.children(server.pid)
        # Both workers have loaded the model (a worker listens for forwarded steps before its first store read,
        # and answers them 503 until then, as it answers its own requests).
        assert wait_for(lambda: len(set(FIRST_LOAD.findall(server.log_text()))) == 2, 120), server.log_text()
        folder = peer_sockets(server)[0][1].parent
        assert folder == peer_sockets(server)[1][1].parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # only this user reaches the workers' sockets
        yield server
    finally:
        assert stop(server) == 0
    assert not folder.exists()  # lstm-serve removes it at exit


def ids_owned_by(index: int, count: int, prefix: str) -> list[str | int]:
    """Sequence ids that worker `index` of 2 owns: strings and integers."""
    found: list[str | int] = []
    for n in itertools.count(1):
        for candidate in (f"{prefix}-{n}", 1000 * n + index):
            if owner_of("lstm", candidate, 2) == index and len(found) < count:
                found.append(candidate)
        if len(found) == count:
            return found
    raise AssertionError("unreachable")


@pytest.mark.slow
def test_chunks_over_fresh_connections_reach_the_owner_and_equal_one_shot(two_workers: Server) -> None:
    rng = np.random.default_rng(15)
    ids = ids_owned_by(0, 6, "a") + ids_owned_by(1, 6, "b")
    wholes = {sequence_id: sine(int(rng.integers(20, 60)), float(rng.uniform(0, 6))) for sequence_id in ids}
    chunks = {}
    for sequence_id, x in wholes.items():  # random chunkings, a chunk of one sample included
        cuts = sorted(set(rng.integers(1, len(x), size=int(rng.integers(2, 6))).tolist()))
        chunks[sequence_id] = np.split(x, cuts)
    outputs: dict[str | int, list[np.ndarray]] = {sequence_id: [] for sequence_id in ids}
    for position in range(max(len(parts) for parts in chunks.values())):  # the sequences interleave
        for sequence_id, parts in chunks.items():
            if position < len(parts):
                last = position == len(parts) - 1
                answer = send_chunk(two_workers, parts[position], sequence_id, start=position == 0, end=last)
                assert answer.json()["parameters"]["sequence_id"] == sequence_id
                outputs[sequence_id].append(outputs_of(answer))
    for sequence_id, x in wholes.items():
        np.testing.assert_allclose(np.concatenate(outputs[sequence_id]), one_shot(two_workers, x), atol=TOLERANCE)
    counted = forwarded(two_workers)
    total = sum(len(parts) for parts in chunks.values())
    assert 0 < counted.get("ok", 0) < total, counted  # some chunks were forwarded, some ran where they landed
    assert set(counted) <= {"ok"}, counted


@pytest.mark.slow
def test_an_owners_error_reaches_the_client_unchanged_through_any_worker(two_workers: Server) -> None:
    (sequence_id,) = ids_owned_by(1, 1, "nobody")
    answers = [send_chunk(two_workers, sine(3, 0), sequence_id) for _ in range(16)]  # no start: not live
    assert {answer.status_code for answer in answers} == {409}, [answer.text for answer in answers]
    assert len({answer.json()["error"] for answer in answers}) == 1  # the same words, forwarded or not
    assert forwarded(two_workers).get("error", 0) > 0


@pytest.mark.slow
def test_kill_9_of_the_owner_gives_its_live_sequences_clear_errors_never_a_wrong_answer(two_workers: Server) -> None:
    doomed, spared = ids_owned_by(0, 5, "doomed"), ids_owned_by(1, 5, "spared")
    wholes = {sequence_id: sine(30, 0.1 * n) for n, sequence_id in enumerate(doomed + spared)}
    outputs: dict[str | int, list[np.ndarray]] = {sequence_id: [] for sequence_id in wholes}
    for sequence_id, x in wholes.items():
        outputs[sequence_id].append(outputs_of(send_chunk(two_workers, x[:10], sequence_id, start=True)))
    owner = peer_socket_owners(two_workers)[0]
    os.kill(owner, signal.SIGKILL)
    assert wait_for(lambda: harness.gone(owner))

    # While it is down (and after its successor starts) a chunk of its sequences is a 503 or a 409, never a 200.
    for sequence_id in doomed:
        answer = send_chunk_past_the_kill(two_workers, wholes[sequence_id][10:20], sequence_id)
        assert answer.status_code in (409, 503), answer.text
        assert "start" in answer.json()["error"], answer.text
    assert wait_for(lambda: peer_socket_owners(two_workers).get(0) not in (None, owner))
    assert f"(pid {owner}) was killed by SIGKILL" in two_workers.log_text()
    for sequence_id in doomed:
        for _ in range(4):  # fresh connections: forwarded to the successor, or landing on it
            answer = send_chunk(two_workers, wholes[sequence_id][20:], sequence_id)
            assert answer.status_code == 409, answer.text
            assert "restarted" in answer.json()["error"], answer.text

    # The other worker's sequences go on, exact.
    for sequence_id in spared:
        for part in (wholes[sequence_id][10:20], wholes[sequence_id][20:]):
            outputs[sequence_id].append(outputs_of(send_chunk(two_workers, part, sequence_id)))
        np.testing.assert_allclose(
            np.concatenate(outputs[sequence_id]), one_shot(two_workers, wholes[sequence_id]), atol=TOLERANCE
        )
    # A doomed sequence started again works on the new owner.
    sequence_id = doomed[0]
    again = outputs_of(send_chunk(two_workers, wholes[sequence_id], sequence_id, start=True, end=True))
    np.testing.assert_allclose(again, one_shot(two_workers, wholes[sequence_id]), atol=TOLERANCE)
