"""gRPC unary vs REST OIP binary vs REST OIP JSON against one lstm-serve, beside the in-process floor of each.

python -m benchmarks.grpc_transport [--store DIR] [--seconds 8] [--processes 2]

Starts one lstm-serve (one worker, one torch thread) on `--store` (default: a fresh store holding an untrained
robust-sized model: hidden 32, 2 layers, so the forward costs what a trained one does) and drives it closed
loop with the same load generator for every transport: `--processes` processes, each with `c / processes`
threads keeping one request in flight on its own connection (gRPC: a channel each; REST: http.client). The
clients spend their time in C (grpc core, sockets); each cell prints the load generator's CPU beside the
server's, so a generator that was the bottleneck shows. The floor is decode + forward + encode of the
service's own codec in this process, on one thread, without any transport: µs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import psutil
import torch

import model_store
from benchmarks import harness
from benchmarks.bodies import PAYLOADS, Payload, sines
from service import grpc_codec, oip
from service.grpc_proto import inference_pb2 as pb
from training import LSTMRegressor, ModelConfig

TRANSPORTS = ("grpc", "grpc_aio", "oip_binary", "oip_json")
LABEL = {
    "grpc": "gRPC unary (raw contents)",
    "grpc_aio": "gRPC unary, grpc.aio client",
    "oip_binary": "REST OIP binary",
    "oip_json": "REST OIP JSON",
}
METHOD = "/inference.GRPCInferenceService/ModelInfer"
# The codec (and so the floor) each transport's server side runs: both gRPC clients send the same message.
CODEC = {"grpc": "grpc", "grpc_aio": "grpc", "oip_binary": "oip_binary", "oip_json": "oip_json"}


def requests_for(payload: Payload) -> dict[str, tuple[bytes, dict[str, str]]]:
    """The bytes each transport sends for `payload`, and its HTTP headers (none for gRPC)."""
    x = sines(payload).astype("<f4")
    raw = x.tobytes()
    message = pb.ModelInferRequest(model_name="lstm", raw_input_contents=[raw])
    message.inputs.add(name="input", datatype="FP32", shape=x.shape)
    spec = {"name": "input", "datatype": "FP32", "shape": list(x.shape)}
    header = orjson.dumps(
        {
            "inputs": [{**spec, "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )
    binary_headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    as_json = orjson.dumps({"inputs": [{**spec, "data": x.ravel().tolist()}]})
    return {
        "grpc": (message.SerializeToString(), {}),
        "oip_binary": (header + raw, binary_headers),
        "oip_json": (as_json, {"Content-Type": "application/json"}),
    }


def _client_thread(
    transport: str,
    rest_port: int,
    grpc_port: int,
    body: bytes,
    headers: dict[str, str],
    stop_at: float,
    out: list[float],
) -> None:
    if transport == "grpc":
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)])
        call: Any = channel.unary_unary(METHOD)  # type: ignore[call-arg]

        def send() -> None:
            call(body, timeout=60)

    else:
        connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=60)

        def send() -> None:
            connection.request("POST", "/v2/models/lstm/infer", body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200, answer.status

    send()  # connect and warm up outside the measured time
    while (started := time.perf_counter()) < stop_at:
        send()
        out.append(time.perf_counter() - started)


async def _aio_clients(grpc_port: int, body: bytes, stop_at: float, latencies: list[list[float]]) -> None:
    """One task per in-flight request on one event loop, each on a channel (a connection) of its own."""

    async def client(out: list[float]) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) as channel:
            call: Any = channel.unary_unary(METHOD)  # type: ignore[call-arg]
            await call(body, timeout=60)  # connect and warm up outside the measured time
            while (started := time.perf_counter()) < stop_at:
                await call(body, timeout=60)
                out.append(time.perf_counter() - started)

    await asyncio.gather(*(client(out) for out in latencies))


def _client_process(args: tuple[str, int, int, bytes, dict[str, str], int, float], queue: Any) -> None:
    transport, rest_port, grpc_port, body, headers, threads, stop_at = args
    latencies: list[list[float]] = [[] for _ in range(threads)]
    if transport == "grpc_aio":
        asyncio.run(_aio_clients(grpc_port, body, stop_at, latencies))
    else:
        workers = [
            threading.Thread(target=_client_thread, args=(transport, rest_port, grpc_port, body, headers, stop_at, out))
            for out in latencies
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    cpu = psutil.Process().cpu_times()
    queue.put(([value for out in latencies for value in out], cpu.user + cpu.system))


def drive(
    transport: str,
    ports: tuple[int, int],
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
    processes: int,
    server_pid: int,
) -> dict[str, float]:
    """Closed-loop load of `concurrency` requests in flight for `seconds`: req/s, p50/p99 ms, CPU of each side."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = min(processes, concurrency)
    per = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    start_at = time.perf_counter() + 3.0  # the processes' start-up (spawn, imports) is not measured
    stop_at = start_at + seconds
    children = [
        context.Process(target=_client_process, args=((transport, *ports, body, headers, n, stop_at), queue))
        for n in per
    ]
    for child in children:
        child.start()
    time.sleep(max(0.0, start_at - time.perf_counter()))
    server_before = harness.cpu_seconds([server_pid])
    results = [queue.get(timeout=seconds + 120) for _ in children]
    server_cpu = harness.cpu_seconds([server_pid]) - server_before
    for child in children:
        child.join()
    latencies = sorted(value for values, _ in results for value in values)
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "server_cpu": server_cpu / seconds,
        "loadgen_cpu": sum(cpu for _, cpu in results) / seconds,  # includes each process's start-up
    }


def floor_us(module: torch.jit.ScriptModule, payload: Payload, repeats: int = 200) -> dict[str, float]:
    """µs of decode + forward + encode per request in this process for each transport's codec (median)."""
    bodies = requests_for(payload)
    torch.set_num_threads(1)

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            output: np.ndarray = module(torch.from_numpy(x)).numpy()
        return output

    def grpc_call() -> None:
        request = pb.ModelInferRequest.FromString(bodies["grpc"][0])
        decoded = grpc_codec.decode_model_infer(request, input_size=1, max_elements=1_000_000)
        output = forward(decoded.tensor)
        grpc_codec.encode_model_infer(
            model_name="lstm", model_version="1", request_id=None, output=output
        ).SerializeToString()

    def rest_call(kind: str) -> Callable[[], None]:
        body, headers = bodies[kind]
        length = headers.get("Inference-Header-Content-Length")

        def call() -> None:
            decoded = oip.decode_infer_request(
                body, None if length is None else int(length), input_size=1, max_elements=1_000_000
            )
            output = forward(decoded.tensor)
            oip.encode_infer_response(
                model_name="lstm", model_version="1", request_id=None, output=output, binary=decoded.output_binary
            )

        return call

    x = sines(payload).astype(np.float32)
    steps: dict[str, Callable[[], None]] = {
        "forward alone": lambda: None if forward(x) is None else None,
        "grpc": grpc_call,
        "oip_binary": rest_call("oip_binary"),
        "oip_json": rest_call("oip_json"),
    }
    results = {}
    for name, step in steps.items():
        for _ in range(5):
            step()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        results[name] = 1e6 * statistics.median(times)
    return results


def robust_sized_store(folder: Path) -> Path:
    torch.manual_seed(0)
    store = model_store.ModelStore(folder / "store")
    spec = (model_store.sequence_spec("input", 1),)
    module = model_store.script(LSTMRegressor(ModelConfig(hidden_size=32, num_layers=2)))
    store.save("lstm", module, inputs=spec, outputs=(model_store.sequence_spec("output", 1),), params={"seed": 0})
    return store.root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--store", type=Path, help="a store with a model `lstm` (default: an untrained robust-sized one)"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--cells", nargs="*", default=["small:1", "small:32", "large:1", "large:32"])
    parser.add_argument("--transports", nargs="*", default=list(TRANSPORTS), choices=TRANSPORTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.store or robust_sized_store(Path(tmp))
        module = model_store.ModelStore(root).load("lstm").module
        payloads = {payload.name: payload for payload in PAYLOADS}
        grpc_port = harness.free_port()
        flags = ["--grpc-port", str(grpc_port), "--log-level", "warning"]
        server = harness.start_lstm_serve(root, Path(tmp) / "serve.log", args=flags)
        with harness.running(server):
            print(
                f"lstm-serve (1 worker, 1 torch thread); {args.processes} load-generator processes; "
                f"{args.seconds:g} s a cell"
            )
            print(
                row(
                    "cell",
                    "transport",
                    "req/s",
                    "p50 ms",
                    "p99 ms",
                    "server CPU",
                    "loadgen CPU",
                    "floor µs",
                    "p50/floor",
                )
            )
            for cell in args.cells:
                name, concurrency = cell.split(":")
                payload = payloads[name]
                floors = floor_us(module, payload)
                bodies = requests_for(payload)
                for transport in args.transports:
                    codec = CODEC[transport]
                    body, headers = bodies[codec]
                    ports = (server.port, grpc_port)
                    got = drive(
                        transport, ports, body, headers, int(concurrency), args.seconds, args.processes, server.pid
                    )
                    cells = (f"{got['rps']:.0f}", f"{got['p50_ms']:.2f}", f"{got['p99_ms']:.2f}")
                    cpu = (f"{got['server_cpu']:.2f}c", f"{got['loadgen_cpu']:.2f}c")
                    ratio = f"{got['p50_ms'] * 1000 / floors[codec]:.2f}x"
                    print(row(cell, LABEL[transport], *cells, *cpu, f"{floors[codec]:.0f}", ratio))
                print(row(cell, "(forward alone)", "", "", "", "", "", f"{floors['forward alone']:.0f}", ""))


def row(*cells: str) -> str:
    widths = (10, 26, 8, 8, 8, 11, 12, 9, 10)
    return " ".join(
        cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
    )


if __name__ == "__main__":
    main()
