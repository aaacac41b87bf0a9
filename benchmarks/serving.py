"""Serving benchmark: req/s and latency of lstm-serve against a naive FastAPI baseline, driven by wrk (a script).

    flock /tmp/cpu.lock .venv/bin/python -m benchmarks.serving --store /tmp/bench-store [--json out.json]

In one run, every round starts each server of SERVERS in turn (bound to 127.0.0.1), checks one request
of each kind answers 200 with the right shape and values, warms it up, and loads it with wrk for
--duration seconds per cell: payloads small (seq 20 x batch 5) and large (500 x 64), at each
--concurrency, through /predict (nested JSON), OIP JSON (flat data) and OIP binary (binary tensor
data, binary output); the naive app has /predict only. Tables quote medians over the rounds and ratios
to the naive app measured in the same run. Also: the in-process floor (forward, decode, encode with
one torch thread), time from process start to ready, RSS per worker, and a load-generator check
against a constant-answer ASGI app. wrk (Debian package `wrk`) must be on PATH.

The load generator and the servers share the machine's cores; nothing is pinned. Each cell reports
the CPU time the server processes and wrk spent per request, so their shares can be read off, and the
CPU other people's work took meanwhile. The servers get this script's environment minus every LSTM_
variable, plus their configuration's variables (see SERVERS). CPU-heavy: run it under the CPU lock.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson
import torch

import model_store
from service.config import Settings

REPO = Path(__file__).resolve().parent.parent
LUA_SCRIPT = Path(__file__).with_name("wrk_request.lua")
MODEL = "lstm"
HOST = "127.0.0.1"  # every server binds loopback only


@dataclass(frozen=True)
class ServerConfig:
    """One server to measure: which app, how many workers, and extra environment variables."""

    name: str
    app: Literal["lstm", "naive", "trivial"]
    workers: int = 1
    env: Mapping[str, str] = field(default_factory=dict)


# The servers every run measures, in this order; each line is one configuration with its environment
# variables. Add a line to compare a setting, e.g.
#   ServerConfig("lstm w1 wait 2ms", "lstm", 1, {"LSTM_BATCH_MAX_WAIT_MS": "2"}),
# lstm-serve ignores LSTM_ variables it does not know, so a line for a setting that does not exist (any
# more) measures the default. Every LSTM_ variable of the calling shell is dropped.
SERVERS: tuple[ServerConfig, ...] = (
    ServerConfig("lstm w1", "lstm", workers=1),
    ServerConfig("lstm w1 no batching", "lstm", workers=1, env={"LSTM_BATCHING": "false"}),
    ServerConfig("lstm w2", "lstm", workers=2),
    ServerConfig("lstm w2 no batching", "lstm", workers=2, env={"LSTM_BATCHING": "false"}),
    ServerConfig("naive", "naive"),
)
# Measured only when named with --servers (then only the servers named are measured).
OPTIONAL_SERVERS: tuple[ServerConfig, ...] = (
    ServerConfig("lstm w1 no access log", "lstm", workers=1, env={"LSTM_LOG_LEVEL": "warning"}),
    ServerConfig("lstm w2 no access log", "lstm", workers=2, env={"LSTM_LOG_LEVEL": "warning"}),
    ServerConfig("lstm w1 1 OMP thread", "lstm", workers=1, env={"OMP_NUM_THREADS": "1"}),
    ServerConfig("lstm w2 1 OMP thread", "lstm", workers=2, env={"OMP_NUM_THREADS": "1"}),
    ServerConfig("lstm w1 2 torch threads", "lstm", workers=1, env={"LSTM_TORCH_THREADS": "2"}),
)
BASELINE = "naive"
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")
TRIVIAL = ServerConfig("trivial ASGI", "trivial")


@dataclass(frozen=True)
class Payload:
    name: str
    seq: int
    batch: int


PAYLOADS = (Payload("small", 20, 5), Payload("large", 500, 64))
KINDS = ("predict", "oip_json", "oip_binary")
KIND_LABEL = {"predict": "/predict", "oip_json": "OIP JSON", "oip_binary": "OIP binary", "get": "GET"}
APP_KINDS: dict[str, tuple[str, ...]] = {"lstm": KINDS, "naive": ("predict",), "trivial": KINDS}


# ---- request bodies --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    """One request of one kind for one payload, as wrk sends it."""

    kind: str
    payload: Payload
    data: bytes
    content_type: str
    header_length: int | None  # Inference-Header-Content-Length, for binary OIP bodies
    file: Path

    def path(self, app: str) -> str:
        if app == "trivial":
            return "/"
        return "/predict" if self.kind == "predict" else f"/v2/models/{MODEL}/infer"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(self.header_length)
        return headers


def sines(payload: Payload) -> npt.NDArray[np.float64]:
    """(seq, batch, 1) sines, one phase and sampling step per sequence (what a JSON client would send)."""
    t = np.arange(payload.seq, dtype=np.float64)[:, None]
    phase = np.linspace(0.0, 2 * np.pi, payload.batch, endpoint=False)[None, :]
    step = np.geomspace(0.05, 1.0, payload.batch)[None, :]
    return np.sin(phase + step * t)[:, :, None]


def make_bodies(payload: Payload, input_name: str, folder: Path) -> dict[str, Body]:
    x = sines(payload)
    x32 = x.astype(np.float32)
    shape = list(x.shape)
    bodies: dict[str, tuple[bytes, str, int | None]] = {
        "predict": (orjson.dumps({"inputs": x.tolist()}), "application/json", None),
        "oip_json": (
            orjson.dumps(
                {"inputs": [{"name": input_name, "shape": shape, "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
            ),
            "application/json",
            None,
        ),
    }
    raw = x32.astype("<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {"name": input_name, "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )
    bodies["oip_binary"] = (header + raw, "application/octet-stream", len(header))
    result = {}
    for kind, (data, content_type, header_length) in bodies.items():
        file = folder / f"{payload.name}-{kind}.body"
        file.write_bytes(data)
        result[kind] = Body(kind, payload, data, content_type, header_length, file)
    return result


def decode_answer(kind: str, content: bytes, headers: Mapping[str, str]) -> npt.NDArray[np.float32]:
    """The output tensor of a 200 answer of `kind`, shaped as the server says."""
    if kind == "predict":
        return np.asarray(orjson.loads(content)["outputs"], dtype=np.float32)
    if kind == "oip_json":
        tensor = orjson.loads(content)["outputs"][0]
        return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    length = int(headers["inference-header-content-length"])
    tensor = orjson.loads(content[:length])["outputs"][0]
    size = tensor["parameters"]["binary_data_size"]
    raw = content[length:]
    if len(raw) != size:
        raise ValueError(f"binary_data_size {size} but {len(raw)} bytes follow the header")
    return np.frombuffer(raw, dtype="<f4").reshape(tensor["shape"])


# ---- processes -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _proc_stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(_proc_stat(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _proc_stat(pid)
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Server:
    """One server process (and its uvicorn workers), started and stopped by this script."""

    def __init__(self, config: ServerConfig, store: Path, model_path: Path, log: Path) -> None:
        self.config = config
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("LSTM_")}
        env.update(config.env)
        python = [sys.executable, "-m"]
        if config.app == "lstm":
            port, workers = str(self.port), str(config.workers)
            self.command = [*python, "service", "--store", str(store), "--host", HOST, "--port", port]
            self.command += ["--workers", workers]
            self.probe = "/readyz"
        elif config.app == "naive":
            env["NAIVE_MODEL_PATH"] = str(model_path)
            self.command = [*python, "uvicorn", "benchmarks.naive_app:app", "--host", HOST, "--port", str(self.port)]
            self.command += ["--workers", str(config.workers)]
            self.probe = "/openapi.json"  # the model loads at import: any 200 means ready
        else:
            self.command = [*python, "uvicorn", "benchmarks.trivial_app:app", "--host", HOST, "--port", str(self.port)]
            self.command += ["--lifespan", "off", "--no-access-log", "--log-level", "warning"]
            self.probe = "/"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.workers: list[int] = []
        self.ready_s = float("nan")  # process start -> first 200 on the probe
        self.all_ready_s = float("nan")  # process start -> every worker has logged "Application startup complete"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 120.0) -> None:
        with self.log.open("wb") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = started + timeout
        while True:
            self._check_alive()
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_request(self.port, "GET", self.probe)[0] == 200:
                    self.ready_s = time.perf_counter() - started
                    break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.config.name} not ready after {timeout:g} s; log: {self.log}")
            time.sleep(0.01)
        if self.config.app == "trivial":  # --lifespan off: no startup line to wait for
            self.all_ready_s = self.ready_s
        elif self.config.env.get("LSTM_LOG_LEVEL", "info").lower() in ("info", "debug", "trace"):
            while self.log.read_text(errors="replace").count("Application startup complete") < self.config.workers:
                self._check_alive()
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{self.config.name}: not every worker started; log: {self.log}")
                time.sleep(0.01)
            self.all_ready_s = time.perf_counter() - started
        else:  # no startup lines in the log: starting is CPU-bound (imports, loading), so done once all is idle
            wait_idle(self)
            self.all_ready_s = time.perf_counter() - started
        self.workers = self.worker_pids()

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.config.name} exited with {self.process.returncode}:\n{tail}")

    def worker_pids(self) -> list[int]:
        """uvicorn runs one worker in the main process; with several, they are its spawned children."""
        spawned = [pid for pid in children(self.pid) if b"spawn_main" in _cmdline(pid)]
        return spawned or [self.pid]

    def tree(self) -> list[int]:
        return [self.pid, *children(self.pid)]

    def worker_restarts(self) -> int:
        return len(re.findall(r"Child process \[\d+\] died", self.log.read_text(errors="replace")))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)  # its own session: only the processes this script started
            self.process.wait(timeout=10)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ---- wrk -------------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One wrk run of one cell."""

    connections: int
    duration_s: int  # wrk's -d
    requests: int  # completed within the run
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    drain_s: float  # how long the server stayed busy after wrk stopped (requests still in flight)
    server_cpu_us_per_req: float  # every server process, run + drain, per request it handled
    wrk_cpu_us_per_req: float
    server_cores: float  # server CPU seconds per wall second during the run
    wrk_cores: float
    other_cores: float  # CPU busy on the machine beyond the server, wrk and this script: other people's work


def wait_idle(server: Server, timeout: float = 180.0, window: float = 0.2) -> tuple[float, float]:
    """Wait until the server's processes use (almost) no CPU; returns (seconds waited, CPU seconds they used).

    When wrk stops, each connection may leave a request in flight; the server still computes it (nobody
    cancels work for a client that left), so the next cell must not start before that backlog is gone.
    """
    pids = server.tree()
    started = time.perf_counter()
    first = cpu_seconds(pids)
    while True:
        before = cpu_seconds(pids)
        time.sleep(window)
        after = cpu_seconds(pids)
        if after - before <= 0.011:  # at most one clock tick in the window
            return max(0.0, time.perf_counter() - started - window), after - first
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{server.config.name} still busy {timeout:g} s after the load stopped")


def wait_quiet(limit: float, window: float = 1.0, threshold: float = 0.2) -> float:
    """Wait (at most `limit` seconds) until the machine's other work uses under `threshold` cores; seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        busy, own = machine_busy_seconds(), own_cpu() + children_cpu()
        time.sleep(window)
        if machine_busy_seconds() - busy - (own_cpu() + children_cpu() - own) < threshold * window:
            break
    return max(0.0, time.perf_counter() - started - window)


def run_wrk(
    server: Server,
    path: str,
    body: Body | None,
    connections: int,
    duration: int,
    args: argparse.Namespace,
) -> Measurement:
    env = dict(os.environ)
    env["WRK_METHOD"] = "GET" if body is None else "POST"
    env["WRK_BODY_FILE"] = "" if body is None else str(body.file)
    env["WRK_CONTENT_TYPE"] = "" if body is None else body.content_type
    env["WRK_HEADER_LENGTH"] = "" if body is None or body.header_length is None else str(body.header_length)
    threads = min(args.wrk_threads, connections)
    url = f"http://{HOST}:{server.port}{path}"
    command = [args.wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s"]
    command += ["--timeout", f"{args.timeout}s", "--latency", "-s", str(LUA_SCRIPT), url]
    pids = server.tree()
    busy_before, own_before = machine_busy_seconds(), own_cpu()
    server_before, wrk_before, wall_before = cpu_seconds(pids), children_cpu(), time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, timeout=duration + args.timeout + 30, check=False)
    wall = time.perf_counter() - wall_before
    server_cpu, wrk_cpu = cpu_seconds(pids) - server_before, children_cpu() - wrk_before
    other = machine_busy_seconds() - busy_before - server_cpu - wrk_cpu - (own_cpu() - own_before)
    drain_s, drain_cpu = wait_idle(server)
    out = done.stdout.decode(errors="replace")
    match = re.search(r"^WRK_JSON (\{.*\})$", out, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {shlex.join(command)}\n{out}\n{done.stderr.decode()}")
    raw = json.loads(match.group(1))
    requests = int(raw["requests"])
    seconds = raw["duration_us"] / 1e6
    # The server handled the completed requests and (closed loop) about one in flight per connection at the end.
    handled = requests + connections
    return Measurement(
        connections=connections,
        duration_s=duration,
        requests=requests,
        seconds=seconds,
        rps=requests / seconds,
        p50_ms=raw["p50_us"] / 1e3 if requests else float("nan"),
        p90_ms=raw["p90_us"] / 1e3 if requests else float("nan"),
        p99_ms=raw["p99_us"] / 1e3 if requests else float("nan"),
        max_ms=raw["max_us"] / 1e3 if requests else float("nan"),
        non2xx=int(raw["non2xx3xx"]),
        socket_errors=sum(int(raw[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")),
        drain_s=drain_s,
        server_cpu_us_per_req=(server_cpu + drain_cpu) / handled * 1e6,
        wrk_cpu_us_per_req=wrk_cpu / max(requests, 1) * 1e6,
        server_cores=server_cpu / wall,
        wrk_cores=wrk_cpu / wall,
        other_cores=max(0.0, other / wall),
    )


# ---- the in-process floor --------------------------------------------------------------------------------


def time_call(fn: Callable[[], object], repeats: int, target_s: float = 0.05, collect: bool = False) -> float:
    """Median over `repeats` batches of the mean µs per call; each batch runs about target_s.

    As timeit does, the cyclic garbage collector is off while timing (else a full collection lands on
    whichever step happens to run when it triggers); collect=True times with it on.
    """
    started = time.perf_counter()
    fn()
    once = time.perf_counter() - started
    number = max(1, int(target_s / max(once, 1e-7)))
    samples = []
    gc.collect()
    enabled = gc.isenabled()
    if not collect:
        gc.disable()
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - started) / number * 1e6)
    finally:
        if enabled:
            gc.enable()
    return statistics.median(samples)


def floor_steps(
    module: model_store.ScriptModule, by_kind: dict[str, Body], input_size: int
) -> dict[str, Callable[[], object]]:
    """The steps a request of each kind goes through, as zero-argument callables on this payload's bodies."""
    from fastapi.encoders import jsonable_encoder

    from benchmarks.naive_app import PredictRequest
    from service.oip import decode_infer_request, encode_infer_response
    from service.tensors import encode_predict, nested_to_array, parse_predict

    numpy_option = orjson.OPT_SERIALIZE_NUMPY
    predict, oip_json, binary = by_kind["predict"].data, by_kind["oip_json"].data, by_kind["oip_binary"].data
    header_length = by_kind["oip_binary"].header_length or 0
    x = sines(by_kind["predict"].payload).astype(np.float32)

    def forward() -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            y: npt.NDArray[np.float32] = module(torch.from_numpy(x)).numpy()
        return y

    y = forward()

    def service_predict_decode() -> object:
        parsed = parse_predict(predict, default_model=MODEL)
        return nested_to_array(parsed.inputs, label="inputs", features=input_size, max_elements=10**9)

    def naive_decode() -> object:  # FastAPI: await request.json() (json.loads), then the pydantic model
        return torch.tensor(PredictRequest.model_validate(json.loads(predict)).inputs)

    def naive_forward() -> object:
        with torch.no_grad():
            return module(torch.from_numpy(x))

    def naive_encode() -> object:  # FastAPI without a response model: jsonable_encoder, then JSONResponse
        content = jsonable_encoder({"outputs": torch.from_numpy(y).tolist()})
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    def binary_encode() -> object:
        return orjson.dumps({"outputs": [{"parameters": {"binary_data_size": y.nbytes}}]}) + y.tobytes()

    return {
        FORWARD: forward,
        "/predict decode: orjson.loads": lambda: orjson.loads(predict),
        "/predict decode: orjson.loads + np.asarray(nested, float32)": lambda: np.asarray(
            orjson.loads(predict)["inputs"], dtype=np.float32
        ),
        PREDICT_DECODE: service_predict_decode,
        "/predict encode: orjson.dumps(OPT_SERIALIZE_NUMPY)": lambda: orjson.dumps({"outputs": y}, option=numpy_option),
        "/predict encode: service encode_predict": lambda: encode_predict(y, MODEL, 1),
        "OIP JSON decode: orjson.loads": lambda: orjson.loads(oip_json),
        "OIP JSON decode: service decode_infer_request": lambda: decode_infer_request(
            oip_json, None, input_size=input_size, max_elements=10**9
        ),
        "OIP JSON encode: orjson.dumps(OPT_SERIALIZE_NUMPY)": lambda: orjson.dumps(
            {"outputs": [{"data": y.reshape(-1)}]}, option=numpy_option
        ),
        "OIP JSON encode: service encode_infer_response": lambda: encode_infer_response(
            model_name=MODEL, model_version="1", request_id=None, output=y, binary=False
        ),
        "OIP binary decode: np.frombuffer": lambda: np.frombuffer(binary, dtype="<f4", offset=header_length),
        "OIP binary decode: service decode_infer_request": lambda: decode_infer_request(
            binary, header_length, input_size=input_size, max_elements=10**9
        ),
        "OIP binary encode: orjson header + tobytes": binary_encode,
        "OIP binary encode: service encode_infer_response": lambda: encode_infer_response(
            model_name=MODEL, model_version="1", request_id=None, output=y, binary=True
        ),
        NAIVE_DECODE: naive_decode,
        NAIVE_FORWARD: naive_forward,
        NAIVE_ENCODE: naive_encode,
    }


def floor(
    module: model_store.ScriptModule,
    model_path: Path,
    bodies: dict[str, dict[str, Body]],
    input_size: int,
    repeats: int,
) -> dict[str, dict[str, float]]:
    """µs per step (median), per payload: forward, decode and encode of each kind, on one torch thread."""
    os.environ["NAIVE_MODEL_PATH"] = str(model_path)  # naive_app loads it at import (its PredictRequest is used)
    results: dict[str, dict[str, float]] = {}
    for name, by_kind in bodies.items():
        steps = floor_steps(module, by_kind, input_size)
        results[name] = {step: time_call(fn, repeats) for step, fn in steps.items()}
        # The nested /predict body is the one that allocates a list per element: its cost with the GC on.
        results[name][PREDICT_DECODE_GC] = time_call(steps[PREDICT_DECODE], repeats, collect=True)
    return results


FORWARD = "forward (TorchScript, inference_mode)"
PREDICT_DECODE = "/predict decode: service (parse_predict + nested_to_array)"
PREDICT_DECODE_GC = "/predict decode: service, with the GC on"
NAIVE_DECODE = "naive decode: json.loads + pydantic + torch.tensor"
NAIVE_FORWARD = "naive forward (no_grad)"
NAIVE_ENCODE = "naive encode: tolist + jsonable_encoder + json.dumps"
# (decode, encode) steps summed with the forward: the floor of each route (the primitives alone) and what the
# service's own codec costs around the same forward.
FLOOR_SUMS = {
    "/predict floor (orjson)": ("/predict decode: orjson.loads", "/predict encode: orjson.dumps(OPT_SERIALIZE_NUMPY)"),
    "/predict floor with a tensor (orjson + np.asarray)": (
        "/predict decode: orjson.loads + np.asarray(nested, float32)",
        "/predict encode: orjson.dumps(OPT_SERIALIZE_NUMPY)",
    ),
    "/predict, service codec": (
        PREDICT_DECODE,
        "/predict encode: service encode_predict",
    ),
    "OIP JSON floor (orjson)": ("OIP JSON decode: orjson.loads", "OIP JSON encode: orjson.dumps(OPT_SERIALIZE_NUMPY)"),
    "OIP JSON, service codec": (
        "OIP JSON decode: service decode_infer_request",
        "OIP JSON encode: service encode_infer_response",
    ),
    "OIP binary floor": ("OIP binary decode: np.frombuffer", "OIP binary encode: orjson header + tobytes"),
    "OIP binary, service codec": (
        "OIP binary decode: service decode_infer_request",
        "OIP binary encode: service encode_infer_response",
    ),
    "naive": (NAIVE_DECODE, NAIVE_ENCODE),
}


# ---- the run ---------------------------------------------------------------------------------------------


@dataclass
class ServerRound:
    """What one start of one server showed."""

    ready_s: float
    all_ready_s: float
    worker_rss_mib: list[float]
    worker_threads: list[int]
    supervisor_rss_mib: float | None
    worker_restarts: int


@dataclass
class Results:
    cells: dict[tuple[str, str, str, int], list[Measurement]] = field(default_factory=dict)
    starts: dict[str, list[ServerRound]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, key: tuple[str, str, str, int], measurement: Measurement) -> None:
        self.cells.setdefault(key, []).append(measurement)


def check_answers(server: Server, bodies: dict[str, dict[str, Body]], module: model_store.ScriptModule) -> None:
    """One request of each kind must answer 200 with the input's shape and the in-process model's values."""
    for by_kind in bodies.values():
        for kind in APP_KINDS[server.config.app]:
            body = by_kind[kind]
            status, headers, content = http_request(
                server.port, "POST", body.path(server.config.app), body.data, body.headers()
            )
            if status != 200:
                raise RuntimeError(f"{server.config.name} {kind} {body.payload.name}: {status} {content[:300]!r}")
            if server.config.app == "trivial":
                continue
            got = decode_answer(kind, content, headers)
            x = sines(body.payload).astype(np.float32)
            with torch.inference_mode():
                want = module(torch.from_numpy(x)).numpy()
            if got.shape != want.shape or not np.allclose(got, want, atol=1e-5):
                raise RuntimeError(
                    f"{server.config.name} {kind} {body.payload.name}: answer shaped {got.shape}, expected "
                    f"{want.shape}; max abs diff {np.abs(got.astype(np.float64) - want).max():.3g}"
                )


def measure_server(
    config: ServerConfig,
    round_no: int,
    args: argparse.Namespace,
    paths: tuple[Path, Path, Path],
    bodies: dict[str, dict[str, Body]],
    module: model_store.ScriptModule,
    results: Results,
) -> None:
    store, model_path, logs = paths
    quiet = wait_quiet(args.quiet_wait)
    if quiet:
        print(f"  waited {quiet:.0f} s for other work on the machine to stop", file=sys.stderr, flush=True)
    server = Server(config, store, model_path, logs / f"{config.name.replace(' ', '_')}-round{round_no}.log")
    with running(server):
        check_answers(server, bodies, module)
        kinds = [kind for kind in KINDS if kind in APP_KINDS[config.app]]
        top = max(args.concurrency)
        # Warm-up: TorchScript profiles and optimises the first calls of each input shape, in every worker.
        # The later half of the sequential warm-up requests gives a first estimate of req/s at one connection.
        estimate: dict[tuple[str, str], float] = {}
        for payload, by_kind in bodies.items():
            for kind in kinds:
                body = by_kind[kind]
                times = []
                for _ in range(args.warmup * config.workers):
                    started = time.perf_counter()
                    status = http_request(server.port, "POST", body.path(config.app), body.data, body.headers())[0]
                    times.append(time.perf_counter() - started)
                    if status != 200:
                        raise RuntimeError(f"{config.name} {kind} {payload}: warm-up answered {status}")
                estimate[(kind, payload)] = 1 / statistics.median(times[len(times) // 2 :])
        wait_idle(server)
        if config.app == "trivial":
            cells: list[tuple[str, Body | None, int]] = [("get", None, 1), ("get", None, top)]
            wanted = (("small", "predict"), *(("large", k) for k in KINDS))
            cells += [(kind, bodies[p][kind], top) for p, kind in wanted if p in bodies]
        else:
            cells = [(kind, bodies[p][kind], c) for p in bodies for kind in kinds for c in sorted(args.concurrency)]
            if config.app == "lstm" and round_no == 1:  # part of the load generator check: once
                cells.append(("get", None, top))
        for kind, request, connections in cells:
            duration = args.duration
            if request is None:
                path = "/healthz" if config.app == "lstm" else "/"
            else:
                path = request.path(config.app)
                # Closed loop: at c connections a request waits for about c / throughput seconds; run long
                # enough for --per-connection answers per connection, within --max-duration.
                rate = estimate[(kind, request.payload.name)] * min(config.workers, connections)
                duration = max(
                    args.duration, min(math.ceil(args.per_connection * connections / rate), args.max_duration)
                )
            measurement = run_wrk(server, path, request, connections, duration, args)
            if args.retry_slow and measurement.requests < connections and duration < args.max_duration:
                # Far slower than estimated (fewer answers than connections): once more, as long as allowed.
                duration = args.max_duration
                measurement = run_wrk(server, path, request, connections, duration, args)
            if request is not None and connections == 1 and measurement.requests:
                estimate[(kind, request.payload.name)] = measurement.rps
            size = "-" if request is None else request.payload.name
            results.add((config.name, kind, size, connections), measurement)
            print(
                f"  {config.name:24} {KIND_LABEL[kind]:10} {size:5} c={connections:<3} {duration:3d} s "
                f"{measurement.rps:9.1f} req/s p50 {measurement.p50_ms:8.2f} ms p99 {measurement.p99_ms:8.2f} ms "
                f"n={measurement.requests} drain {measurement.drain_s:.1f} s other {measurement.other_cores:.2f} cores",
                file=sys.stderr,
                flush=True,
            )
        supervisor = None if server.workers == [server.pid] else rss_mib(server.pid)
        results.starts.setdefault(config.name, []).append(
            ServerRound(
                ready_s=server.ready_s,
                all_ready_s=server.all_ready_s,
                worker_rss_mib=[rss_mib(pid) for pid in server.workers],
                worker_threads=[len(list(Path(f"/proc/{pid}/task").iterdir())) for pid in server.workers],
                supervisor_rss_mib=supervisor,
                worker_restarts=server.worker_restarts(),
            )
        )


# ---- report ----------------------------------------------------------------------------------------------


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def machine(args: argparse.Namespace) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    wrk = subprocess.run([args.wrk, "-v"], capture_output=True, check=False).stdout.decode().splitlines()
    git = ["git", "-C", str(REPO), "describe", "--always", "--dirty"]
    commit = subprocess.run(git, capture_output=True, check=False).stdout.decode().strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "orjson": package_version("orjson"),
        "fastapi": package_version("fastapi"),
        "starlette": package_version("starlette"),
        "pydantic": package_version("pydantic"),
        "uvicorn": package_version("uvicorn"),
        "uvloop": package_version("uvloop"),
        "httptools": package_version("httptools"),
        "wrk": wrk[0] if wrk else "-",
        "commit": commit or "unknown",
        "thread env": " ".join(f"{k}={os.environ[k]}" for k in THREAD_ENV if k in os.environ) or "none set",
    }


def fmt(value: float, digits: int = 2) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or a != a or b != b else f"{a / b:.2f}×"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def summarise(cells: list[Measurement]) -> dict[str, float]:
    return {
        "rps": median([m.rps for m in cells]),
        "rps_min": min(m.rps for m in cells),
        "rps_max": max(m.rps for m in cells),
        "p50_ms": median([m.p50_ms for m in cells]),
        "p99_ms": median([m.p99_ms for m in cells]),
        "server_cpu_us": median([m.server_cpu_us_per_req for m in cells]),
        "wrk_cpu_us": median([m.wrk_cpu_us_per_req for m in cells]),
        "server_cores": median([m.server_cores for m in cells]),
        "wrk_cores": median([m.wrk_cores for m in cells]),
        "other_cores": median([m.other_cores for m in cells]),
        "requests": sum(m.requests for m in cells),
        "requests_per_round": median([m.requests for m in cells]),
        "duration_s": median([m.duration_s for m in cells]),
        "drain_s": median([m.drain_s for m in cells]),
        "non2xx": sum(m.non2xx for m in cells),
        "socket_errors": sum(m.socket_errors for m in cells),
    }


def floor_report(floor_us: dict[str, dict[str, float]]) -> list[str]:
    out = ["### In-process floor (1 torch thread, GC off as in timeit unless said, median µs per call)", ""]
    names = list(floor_us)
    steps = list(floor_us[names[0]])
    out += table(["step", *(f"{n} µs" for n in names)], [[s, *(fmt(floor_us[n][s], 1) for n in names)] for s in steps])
    out.append("")
    rows = []
    for label, (decode, encode) in FLOOR_SUMS.items():
        forward = NAIVE_FORWARD if label == "naive" else FORWARD
        totals = {n: floor_us[n][decode] + floor_us[n][forward] + floor_us[n][encode] for n in names}
        rows.append([label, *(f"{fmt(totals[n], 1)} µs = {fmt(1e6 / totals[n], 0)} req/s per core" for n in names)])
    out += table(["decode + forward + encode", *names], rows)
    out.append("")
    return out


# The targets (issue 5), each computed from this run's numbers.
SMALL_RPS_VS_NAIVE = 2.0  # small /predict, c=32
LARGE_PREDICT_P50_VS_FLOOR = 1.3  # large /predict JSON, c=1, over its in-process floor
LARGE_OIP_JSON_RPS, LARGE_OIP_JSON_P50_MS = 120.0, 8.0  # large OIP JSON, c=1
BINARY_VS_JSON_P50 = 5.0  # large OIP binary p50, this many times faster than large /predict JSON
BATCHING_RPS = 1.3  # small /predict at c=64, batching on over off
READY_S = 3.0


def route_floor_ms(floor_us: dict[str, float], label: str) -> float:
    decode, encode = FLOOR_SUMS[label]
    return (floor_us[decode] + floor_us[FORWARD] + floor_us[encode]) / 1e3


def targets_report(
    configs: Sequence[ServerConfig],
    summary: Mapping[tuple[str, str, str, int], dict[str, float]],
    floor_us: dict[str, dict[str, float]],
    results: Results,
) -> list[str]:
    """One row per target and server: what this run measured against what issue 5 asks."""
    rows: list[list[str]] = []
    lstm = [c for c in configs if c.app == "lstm"]
    names = {c.name for c in configs}

    def add(target: str, server: str, measured: str, met: bool) -> None:
        rows.append([target, server, measured, "yes" if met else "**no**"])

    base = summary.get((BASELINE, "predict", "small", 32)) if BASELINE in names else None
    large = floor_us.get("large")
    for config in lstm:
        s = summary.get((config.name, "predict", "small", 32))
        if s and base:
            measured = f"{s['rps']:.0f} vs {base['rps']:.0f} req/s = {s['rps'] / base['rps']:.2f}×"
            add(
                f"small /predict c=32: ≥ {SMALL_RPS_VS_NAIVE:g}× naive req/s",
                config.name,
                measured,
                s["rps"] >= SMALL_RPS_VS_NAIVE * base["rps"],
            )
    for config in lstm:
        predict = summary.get((config.name, "predict", "large", 1))
        if predict and large:
            bound = route_floor_ms(large, "/predict floor (orjson)")
            tensor_bound = route_floor_ms(large, "/predict floor with a tensor (orjson + np.asarray)")
            measured = (
                f"p50 {predict['p50_ms']:.2f} ms vs floor {bound:.2f} ms = {predict['p50_ms'] / bound:.2f}× "
                f"({predict['p50_ms'] / tensor_bound:.2f}× the floor that also makes the tensor, {tensor_bound:.2f} ms)"
            )
            add(
                f"large /predict JSON c=1: p50 ≤ {LARGE_PREDICT_P50_VS_FLOOR:g}× floor",
                config.name,
                measured,
                predict["p50_ms"] <= LARGE_PREDICT_P50_VS_FLOOR * bound,
            )
        oip = summary.get((config.name, "oip_json", "large", 1))
        if oip and large:
            ceiling = 1e3 / route_floor_ms(large, "OIP JSON floor (orjson)")
            measured = (
                f"{oip['rps']:.1f} req/s, p50 {oip['p50_ms']:.2f} ms (the floor allows {ceiling:.0f} req/s per core)"
            )
            add(
                f"large OIP JSON c=1: ≥ {LARGE_OIP_JSON_RPS:g} req/s, p50 ≤ {LARGE_OIP_JSON_P50_MS:g} ms",
                config.name,
                measured,
                oip["rps"] >= LARGE_OIP_JSON_RPS and oip["p50_ms"] <= LARGE_OIP_JSON_P50_MS,
            )
        binary = summary.get((config.name, "oip_binary", "large", 1))
        if binary and predict and large:
            bound = route_floor_ms(large, "/predict floor (orjson)") / route_floor_ms(large, "OIP binary floor")
            measured = (
                f"{predict['p50_ms']:.2f} / {binary['p50_ms']:.2f} ms = {predict['p50_ms'] / binary['p50_ms']:.2f}× "
                f"(the floors allow {bound:.2f}×)"
            )
            add(
                f"large OIP binary c=1: p50 ≥ {BINARY_VS_JSON_P50:g}× faster than /predict JSON",
                config.name,
                measured,
                predict["p50_ms"] >= BINARY_VS_JSON_P50 * binary["p50_ms"],
            )
    wait_ms = float(Settings.model_fields["batch_max_wait_ms"].default)
    for config in lstm:
        off_name = f"{config.name} no batching"
        if config.env.get("LSTM_BATCHING") == "false" or off_name not in names:
            continue
        on, off = summary.get((config.name, "predict", "small", 64)), summary.get((off_name, "predict", "small", 64))
        if on and off:
            measured = f"{on['rps']:.0f} vs {off['rps']:.0f} req/s = {on['rps'] / off['rps']:.2f}×"
            add(
                f"batching, small /predict c=64: ≥ {BATCHING_RPS:g}× req/s of off",
                config.name,
                measured,
                on["rps"] >= BATCHING_RPS * off["rps"],
            )
        on, off = summary.get((config.name, "predict", "small", 1)), summary.get((off_name, "predict", "small", 1))
        if on and off:
            measured = f"p50 {on['p50_ms']:.3f} ms on, {off['p50_ms']:.3f} ms off (max wait {wait_ms:g} ms)"
            add(
                "batching, small /predict c=1: p50 ≤ off + max wait",
                config.name,
                measured,
                on["p50_ms"] <= off["p50_ms"] + wait_ms,
            )
    for config in lstm:
        starts = results.starts.get(config.name, [])
        if starts:
            ready = median([s.ready_s for s in starts])
            every = median([s.all_ready_s for s in starts])
            rss = median([v for s in starts for v in s.worker_rss_mib])
            measured = f"{ready:.2f} s to the first 200, {every:.2f} s until every worker started; {rss:.0f} MiB/worker"
            add(f"ready ≤ {READY_S:g} s, memory per worker reported", config.name, measured, every <= READY_S)
    if not rows:
        return []
    out = ["### Targets (issue 5), from this run", ""]
    out += table(["target", "server", "measured (medians)", "met"], rows)
    out.append("")
    out.append(
        "Floors are the in-process medians below (decode + forward + encode with orjson and one torch thread). "
        "'The floors allow' is the best any server could do on this machine with this model: the forward alone "
        "bounds both routes. /predict p99 during a training job is measured by benchmarks/train_load.py."
    )
    out.append("")
    return out


def report(
    args: argparse.Namespace,
    info: dict[str, str],
    configs: Sequence[ServerConfig],
    floor_us: dict[str, dict[str, float]],
    results: Results,
    bodies: dict[str, dict[str, Body]],
    elapsed: float,
) -> tuple[list[str], dict[str, Any]]:
    out: list[str] = []
    summary = {key: summarise(cells) for key, cells in results.cells.items()}
    out.append(f"Command: `{shlex.join(sys.orig_argv)}` (code: {info['commit']})")
    out.append("")
    out.append(
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['memory']}, Linux {info['kernel']}; python "
        f"{info['python']}, torch {info['torch']}, numpy {info['numpy']}, orjson {info['orjson']}, fastapi "
        f"{info['fastapi']}, starlette {info['starlette']}, pydantic {info['pydantic']}, uvicorn {info['uvicorn']} "
        f"(uvloop {info['uvloop']}, httptools {info['httptools']}), {info['wrk']}; thread variables in the "
        f"environment: {info['thread env']}."
    )
    out.append("")
    out.append(f"Model served: {info['model']}.")
    out.append("")
    other = [m.other_cores for cells in results.cells.values() for m in cells]
    out += [
        f"Method (run took {elapsed / 60:.1f} min):",
        "",
        f"- {args.rounds} rounds; each starts every server afresh, checks one answer of each kind (200, shape, values "
        f"against the in-process model), sends {args.warmup} warm-up requests per kind, payload and worker, then runs "
        f"wrk per cell: {args.wrk_threads} wrk thread(s), HTTP/1.1 keep-alive, closed loop (each connection sends its "
        f"next request when the answer arrives), --timeout {args.timeout} s, at least {args.duration} s per run"
        + (
            f"; a run with fewer answers than connections is run once more for {args.max_duration} s (--retry-slow)."
            if args.retry_slow
            else "."
        ),
        "- After every run the script waits until the server's processes are idle (requests still in flight when wrk "
        "stops are computed to the end), so no run inherits the previous one's backlog; before starting each server "
        f"it waits (at most {args.quiet_wait:g} s) for other work on the machine to stop.",
        "- The load generator check (trivial app, /healthz) runs in the first round only.",
        "- Medians over rounds; 'range' is min–max req/s over rounds. Latency is wrk's, client side, per request.",
        "- wrk and the servers share the machine's cores; nothing is pinned. 'server µs/req' and 'wrk µs/req' are the "
        "CPU time each spent per request; 'other' is CPU busy outside the server, wrk and this script (someone "
        f"else's work): median {median(other):.2f}, max {max(other, default=float('nan')):.2f} cores over all runs.",
        "",
    ]
    out += targets_report(configs, summary, floor_us, results)
    sizes = ", ".join(
        f"{name} = seq {b['predict'].payload.seq} × batch {b['predict'].payload.batch} (bodies: /predict "
        f"{len(b['predict'].data) / 1024:.1f} KiB, OIP JSON {len(b['oip_json'].data) / 1024:.1f} KiB, OIP binary "
        f"{len(b['oip_binary'].data) / 1024:.1f} KiB)"
        for name, b in bodies.items()
    )
    out.append(f"Payloads: {sizes}.")
    out.append("")
    out.append("Servers (all on 127.0.0.1; lstm-serve with its defaults, 1 torch thread per worker):")
    out.append("")
    for config in configs:
        env = " ".join(f"{k}={v}" for k, v in config.env.items()) or "no extra env"
        what = {"lstm": "lstm-serve", "naive": "benchmarks/naive_app.py under uvicorn", "trivial": "?"}[config.app]
        out.append(f"- `{config.name}`: {what}, {config.workers} worker(s), {env}")
    out.append("")

    # throughput and latency, one table per payload
    baseline_name = BASELINE if any(c.name == BASELINE for c in configs) else None
    for payload in (p for p in PAYLOADS if p.name in bodies):
        out.append(f"### {payload.name}: seq {payload.seq} × batch {payload.batch}")
        out.append("")
        rows = []
        for config in configs:
            for kind in APP_KINDS[config.app]:
                for c in args.concurrency:
                    s = summary.get((config.name, kind, payload.name, c))
                    if s is None:
                        continue
                    base = summary.get((baseline_name or "", "predict", payload.name, c))
                    few = "†" if s["requests_per_round"] < 2 * c else ""
                    rows.append(
                        [
                            config.name,
                            KIND_LABEL[kind],
                            str(c),
                            f"{s['duration_s']:.0f} s, {s['requests_per_round']:.0f}{few}",
                            fmt(s["rps"], 1),
                            f"{fmt(s['rps_min'], 1)}–{fmt(s['rps_max'], 1)}",
                            fmt(s["p50_ms"]),
                            fmt(s["p99_ms"]),
                            ratio(s["rps"], base["rps"]) if base else "-",
                            ratio(base["p50_ms"], s["p50_ms"]) if base else "-",
                            ratio(base["p99_ms"], s["p99_ms"]) if base else "-",
                            fmt(s["server_cpu_us"], 0),
                            fmt(s["wrk_cpu_us"], 0),
                            f"{s['other_cores']:.2f}",
                            str(int(s["non2xx"] + s["socket_errors"])),
                        ]
                    )
        out += table(
            [
                "server",
                "route",
                "conc",
                "run, answers",
                "req/s",
                "range",
                "p50 ms",
                "p99 ms",
                "req/s vs naive",
                "p50 naive/this",
                "p99 naive/this",
                "server µs/req",
                "wrk µs/req",
                "other",
                "errors",
            ],
            rows,
        )
        out.append("")
    out.append(
        "'run, answers': wrk's run length per round (stretched for slow cells so each connection can get about "
        f"{args.per_connection:g} answers, at most {args.max_duration} s) and the median number of answers per "
        "round; † marks fewer than 2 per connection, where p99 rests on few samples. Ratios: this server's req/s "
        "over the naive app's /predict, and the naive app's latency over this one's (above 1: this one is faster). "
        "'server µs/req': CPU of all the server's processes during the run and until it was idle again, per "
        "request it handled (answered + one in flight per connection)."
    )
    out.append("")

    # pivot: req/s ratio to naive
    if baseline_name:
        out.append("### req/s relative to the naive app's /predict (same payload and concurrency, same run)")
        out.append("")
        columns = [(c.name, kind) for c in configs if c.name != baseline_name for kind in APP_KINDS[c.app]]
        rows = []
        for payload in (p for p in PAYLOADS if p.name in bodies):
            for c in args.concurrency:
                base = summary.get((baseline_name, "predict", payload.name, c))
                row = [payload.name, str(c), fmt(base["rps"], 1) if base else "-"]
                for name, kind in columns:
                    s = summary.get((name, kind, payload.name, c))
                    row.append(ratio(s["rps"], base["rps"]) if s and base else "-")
                rows.append(row)
        out += table(
            ["payload", "conc", "naive req/s", *(f"{name} {KIND_LABEL[kind]}" for name, kind in columns)], rows
        )
        out.append("")

    # start-up and memory
    out.append("### Start-up and memory")
    out.append("")
    rows = []
    for config in configs:
        starts = results.starts.get(config.name, [])
        if not starts:
            continue
        ready = [s.ready_s for s in starts]
        all_ready = [s.all_ready_s for s in starts]
        per_worker = [statistics.median(col) for col in zip(*(s.worker_rss_mib for s in starts), strict=False)]
        supervisors = [s.supervisor_rss_mib for s in starts if s.supervisor_rss_mib is not None]
        threads = [statistics.median(col) for col in zip(*(s.worker_threads for s in starts), strict=False)]
        rows.append(
            [
                config.name,
                f"{median(ready):.2f} ({min(ready):.2f}–{max(ready):.2f})",
                f"{median(all_ready):.2f} ({min(all_ready):.2f}–{max(all_ready):.2f})",
                ", ".join(f"{v:.0f}" for v in per_worker),
                ", ".join(f"{v:.0f}" for v in threads),
                f"{median(supervisors):.0f}" if supervisors else "-",
                str(sum(s.worker_restarts for s in starts)),
            ]
        )
    out += table(
        [
            "server",
            "start → first ready 200, s (range)",
            "start → every worker started, s",
            "RSS per worker after load, MiB",
            "threads per worker",
            "supervisor RSS, MiB",
            "worker restarts",
        ],
        rows,
    )
    out.append("")
    out.append(
        "Ready: from Popen to the first 200 on /readyz (the naive app: /openapi.json; it loads its model at import). "
        "Every worker started: its 'Application startup complete' line is in the log. RSS: VmRSS of each worker "
        "process after the round's load (median over rounds); with several workers uvicorn's supervisor is a "
        "separate process."
    )
    out.append("")

    out += floor_report(floor_us)

    # load generator
    out.append("### Load generator check")
    out.append("")
    rows = []
    for config_name in (TRIVIAL.name, *(c.name for c in configs if c.app == "lstm")):
        for (name, kind, size, c), s in summary.items():
            if name != config_name or (config_name != TRIVIAL.name and kind != "get"):
                continue
            target = "/healthz" if config_name != TRIVIAL.name and kind == "get" else KIND_LABEL[kind]
            rows.append(
                [
                    config_name,
                    f"{target} {size}" if size != "-" else target,
                    str(c),
                    fmt(s["rps"], 1),
                    fmt(s["p50_ms"], 3),
                    fmt(s["p99_ms"], 3),
                    fmt(s["wrk_cpu_us"], 1),
                    f"{s['wrk_cores']:.2f}",
                    f"{s['server_cores']:.2f}",
                    f"{s['other_cores']:.2f}",
                    str(int(s["non2xx"] + s["socket_errors"])),
                ]
            )
    out += table(
        [
            "server",
            "request",
            "conc",
            "req/s",
            "p50 ms",
            "p99 ms",
            "wrk µs/req",
            "wrk cores",
            "server cores",
            "other",
            "errors",
        ],
        rows,
    )
    out.append("")
    model_runs = [
        (key, m) for key, cells in results.cells.items() if key[0] != TRIVIAL.name and key[1] != "get" for m in cells
    ]
    if model_runs:
        (name, kind, size, c), busiest = max(model_runs, key=lambda item: item[1].wrk_cores)
        out.append(
            "The trivial ASGI app (benchmarks/trivial_app.py, uvicorn, no access log) drains the body and answers a "
            "constant; /healthz is lstm-serve's cheapest route (the framework and middleware, no model). In the "
            f"model-server runs wrk used at most {busiest.wrk_cores:.2f} cores ({name}, {KIND_LABEL[kind]} {size}, "
            f"c={c}, {busiest.rps:.0f} req/s), against the rates above that it drives on the trivial app."
        )
        out.append("")
    errors = sum(int(s["non2xx"] + s["socket_errors"]) for s in summary.values())
    requests = sum(int(s["requests"]) for s in summary.values())
    out.append(f"Non-2xx responses and socket errors over all {requests} measured requests: {errors}.")
    for failure in results.failures:
        out += ["", f"**Failed:** {failure}"]

    data = {
        "command": sys.orig_argv,
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "servers": [asdict(c) | {"env": dict(c.env)} for c in configs],
        "floor_us": floor_us,
        "cells": [
            {"server": k[0], "kind": k[1], "payload": k[2], "concurrency": k[3], "summary": summary[k]}
            | {"rounds": [asdict(m) for m in v]}
            for k, v in results.cells.items()
        ],
        "starts": {name: [asdict(s) for s in starts] for name, starts in results.starts.items()},
        "errors": errors,
        "failures": results.failures,
    }
    return out, data


# ---- main ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    known = {c.name: c for c in (*SERVERS, *OPTIONAL_SERVERS)}
    parser = argparse.ArgumentParser(
        description="Serving benchmark (wrk): lstm-serve vs the naive app. Run it under `flock /tmp/cpu.lock`."
    )
    parser.add_argument("--store", type=Path, default=Path("model-store"), help="model store (default model-store)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each restarts every server (default 3)")
    parser.add_argument("--duration", type=int, default=2, help="seconds of wrk per cell and round (default 2)")
    parser.add_argument(
        "--warmup", type=int, default=10, help="warm-up requests per kind, payload and worker (default 10)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 64], help="connections (1 32 64)")
    parser.add_argument(
        "--payloads",
        nargs="+",
        choices=[p.name for p in PAYLOADS],
        default=[p.name for p in PAYLOADS],
        help="payloads to measure (default: all)",
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--per-connection",
        type=float,
        default=2.0,
        help="stretch a cell's run so each connection can get about this many answers (default 2)",
    )
    parser.add_argument(
        "--max-duration", type=int, default=20, help="longest run of one cell when stretched, s (default 20)"
    )
    parser.add_argument(
        "--retry-slow",
        action="store_true",
        help="run a cell once more, for --max-duration, when it got fewer answers than connections "
        "(better numbers for collapsing servers, but a full run takes much longer)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="before starting each server, wait up to this long for other work on the machine to stop (default 60)",
    )
    parser.add_argument("--timeout", type=int, default=60, help="wrk per-request timeout, s (default 60)")
    parser.add_argument("--floor-repeats", type=int, default=7, help="batches per in-process step (default 7)")
    parser.add_argument("--no-loadgen-check", action="store_true", help="skip the trivial-app load generator check")
    parser.add_argument("--floor-only", action="store_true", help="measure only the in-process floor (no servers)")
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=sorted(known),
        metavar="NAME",
        help=f"servers to run (default: all of {[c.name for c in SERVERS]}; also {[c.name for c in OPTIONAL_SERVERS]})",
    )
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default wrk)")
    parser.add_argument("--json", type=Path, help="also write every number as JSON here")
    args = parser.parse_args(argv)
    if shutil.which(args.wrk) is None:
        parser.error(f"{args.wrk} not found; install it (Debian: apt-get install wrk)")
    configs = [known[name] for name in args.servers] if args.servers else list(SERVERS)

    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
    torch.set_num_threads(1)
    store = model_store.ModelStore(args.store)
    try:
        serving = store.resolve(MODEL)
    except model_store.StoreError as exc:
        parser.error(f"{exc}; make one with `lstm-train --store {args.store}`")
    loaded = store.load(MODEL, serving)
    model_path = store.version_file(MODEL, serving, "model.pt").resolve()
    info = machine(args)
    params = loaded.manifest.params
    info["model"] = (
        f"{MODEL} version {serving} of {args.store}: preset {params.get('preset', '?')}, "
        f"{params.get('num_layers', '?')} layer(s) of {params.get('hidden_size', '?')} hidden units"
    )
    results = Results()
    run_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        folder = Path(tmp)
        (folder / "logs").mkdir()
        chosen = [p for p in PAYLOADS if p.name in args.payloads]
        bodies = {p.name: make_bodies(p, loaded.manifest.inputs[0].name, folder) for p in chosen}
        print(f"in-process floor ({MODEL} version {serving}) ...", file=sys.stderr, flush=True)
        floor_us = floor(loaded.module, model_path, bodies, loaded.manifest.input_size, args.floor_repeats)
        paths = (args.store.resolve(), model_path, folder / "logs")
        for round_no in range(1, 0 if args.floor_only else args.rounds + 1):
            # The load generator check needs no median: once, in the first round.
            check = () if args.no_loadgen_check or round_no > 1 else (TRIVIAL,)
            for config in (*configs, *check):
                print(f"round {round_no}/{args.rounds}: {config.name}", file=sys.stderr, flush=True)
                try:
                    measure_server(config, round_no, args, paths, bodies, loaded.module, results)
                except (RuntimeError, OSError, subprocess.SubprocessError, http.client.HTTPException) as exc:
                    # One broken server must not cost the whole run: report it and go on with the others.
                    results.failures.append(f"round {round_no}, {config.name}: {exc}")
                    print(f"  FAILED: {exc}", file=sys.stderr, flush=True)
    if args.floor_only:
        print(f"Command: `{shlex.join(sys.orig_argv)}` (code: {info['commit']})\n\nModel: {info['model']}.\n")
        print("\n".join(floor_report(floor_us)))
        return 0
    lines, data = report(args, info, configs, floor_us, results, bodies, time.perf_counter() - run_started)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1, default=str))
    return 1 if data["errors"] or data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
