"""Soak: mixed traffic at a fixed concurrency against a real lstm-serve for a bounded time (a script, not a test).

.venv/bin/python -m benchmarks.soak --store DIR [--seconds 600] [--concurrency 64] [--workers 1]

Starts `lstm-serve` on 127.0.0.1 (a free port) over DIR, which must already hold a model (train one with
`lstm-train --store DIR`). `--concurrency` asyncio clients then send predict JSON and OIP binary requests
(most of the traffic), model listings and /metrics scrapes until the time is up; one small training job is
queued early on and its version is promoted half-way through (the alias is put back afterwards). Every
answer is checked. Prints the errors (there must be none), latency percentiles per kind, and the resident
memory of the server process(es), sampled every few seconds. Exits 1 on any error, or when the memory
grew by 10% or more after the warm-up. Sends nothing anywhere but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
import torch

from benchmarks import harness
from benchmarks.harness import HOST

HEADER = "Inference-Header-Content-Length"
REQUEST_TIMEOUT = 30.0
WEIGHTS = {"predict_json": 0.47, "oip_binary": 0.47, "models": 0.05, "metrics": 0.01}
JOB_PARAMS = {
    "hidden_size": 8,
    "num_layers": 1,
    "max_epochs": 300,
    "batch_size": 8,
    "seq_len": 16,
    "short_batch_size": 8,
}


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    versions: Counter[int] = field(default_factory=Counter)

    def error(self, kind: str, what: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {what}")


def server_pids(main: int) -> list[int]:
    """The lstm-serve process and its direct children that serve (uvicorn workers), not training processes."""
    serving = [pid for pid in harness.children(main) if not any("training" in arg for arg in harness.cmdline(pid))]
    return [main, *serving]


def rss_mib(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += harness.rss_mib(pid)
    return total


def bodies(seed: int) -> dict[str, tuple[bytes, dict[str, str], tuple[int, ...]]]:
    rng = np.random.default_rng(seed)
    t = np.arange(100)[:, None] * rng.uniform(0.05, 1.0, 4)[None, :] + rng.uniform(0, 6.3, 4)[None, :]
    x_json = np.sin(t)[..., None].astype(np.float32)  # (100, 4, 1)
    t = np.arange(200)[:, None] * rng.uniform(0.05, 1.0, 8)[None, :] + rng.uniform(0, 6.3, 8)[None, :]
    x_binary = np.sin(t)[..., None].astype("<f4")  # (200, 8, 1)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(x_binary.shape),
                    "parameters": {"binary_data_size": x_binary.nbytes},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )
    return {
        "predict_json": (orjson.dumps({"inputs": x_json.tolist()}), {"content-type": "application/json"}, x_json.shape),
        "oip_binary": (
            header + x_binary.tobytes(),
            {HEADER: str(len(header)), "content-type": "application/octet-stream"},
            x_binary.shape,
        ),
    }


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body[:200].decode(errors="replace")


class Connection:
    """One keep-alive HTTP/1.1 connection: httpx spends more CPU per request than the server does, on the same cores."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Answer:
        if self.streams is None:
            self.streams = await asyncio.open_connection(HOST, self.port)
        reader, writer = self.streams
        fields = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        writer.write(
            f"{method} {path} HTTP/1.1\r\nhost: {HOST}\r\ncontent-length: {len(body)}\r\n{fields}\r\n".encode()
        )
        writer.write(body)
        await writer.drain()
        status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        answer_headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                answer_headers[name.strip().lower()] = value.strip()
        if "content-length" not in answer_headers:
            raise ValueError(f"an answer without content-length: {status_line} {answer_headers}")
        content = await reader.readexactly(int(answer_headers["content-length"]))
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(int(status_line.split(" ", 2)[1]), answer_headers, content)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def one_request(connection: Connection, kind: str, payloads: dict[str, Any], tally: Tally) -> None:
    if kind == "predict_json":
        body, headers, shape = payloads[kind]
        response = await connection.request("POST", "/predict", body, headers)
        if response.status != 200:
            tally.error(kind, f"{response.status} {response.text}")
            return
        answer = orjson.loads(response.body)
        if np.asarray(answer["outputs"]).shape != shape:
            tally.error(kind, f"output shape {np.asarray(answer['outputs']).shape}")
        tally.versions[answer["version"]] += 1
    elif kind == "oip_binary":
        body, headers, shape = payloads[kind]
        response = await connection.request("POST", "/v2/models/lstm/infer", body, headers)
        if response.status != 200:
            tally.error(kind, f"{response.status} {response.text}")
            return
        length = int(response.headers[HEADER.lower()])
        header = orjson.loads(response.body[:length])
        if header["outputs"][0]["shape"] != list(shape) or len(response.body) - length != 4 * int(np.prod(shape)):
            tally.error(kind, f"output {header['outputs'][0]} with {len(response.body) - length} bytes")
        tally.versions[int(header["model_version"])] += 1
    elif kind == "models":
        response = await connection.request("GET", "/models")
        if response.status != 200 or not orjson.loads(response.body)["models"]:
            tally.error(kind, f"{response.status} {response.text}")
    else:
        response = await connection.request("GET", "/metrics")
        if response.status != 200 or b"lstm_http_requests_total" not in response.body:
            tally.error(kind, f"{response.status} {response.text}")


async def traffic(port: int, deadline: float, seed: int, payloads: dict[str, Any], tally: Tally) -> None:
    rng = random.Random(seed)
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    connection = Connection(port)
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        started = time.perf_counter()
        try:
            await asyncio.wait_for(one_request(connection, kind, payloads, tally), REQUEST_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
            tally.error(kind, f"{type(exc).__name__}: {exc}")
            connection.close()
            continue
        tally.latencies[kind].append(time.perf_counter() - started)
    connection.close()


async def train_then_promote(
    client: httpx.AsyncClient, start: float, seconds: float, tally: Tally, events: list[str]
) -> tuple[int, int] | None:
    """Queue one small job at 5% of the run, promote its version at 50%; returns (previous, promoted)."""
    await asyncio.sleep(seconds * 0.05)
    models = (await client.get("/models")).json()["models"]
    previous = next(m["serving_version"] for m in models if m["name"] == "lstm")
    submitted = time.monotonic()
    response = await client.post("/train", json={"params": JOB_PARAMS, "promote": "never"})
    if response.status_code != 202:
        tally.error("train", f"{response.status_code} {response.text[:200]}")
        return None
    job = response.json()
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > start + seconds:
            tally.error("train", f"job {job['id']} still {job['status']} at the end of the run")
            return None
        await asyncio.sleep(1.0)
        job = (await client.get(f"/train/{job['id']}")).json()
    if job["status"] != "succeeded":
        tally.error("train", f"job {job['id']} {job['status']}: {job.get('error')}")
        return None
    version = job["result"]["version"]
    events.append(
        f"training job {job['id'][:8]}: queued at t={submitted - start:.0f} s, succeeded after "
        f"{time.monotonic() - submitted:.0f} s as version {version} ({JOB_PARAMS['max_epochs']} epochs)"
    )
    await asyncio.sleep(max(0.0, start + seconds * 0.5 - time.monotonic()))
    promoted_at = time.monotonic()
    response = await client.put("/models/lstm/aliases/production", json={"version": version})
    if response.status_code != 200:
        tally.error("promote", f"{response.status_code} {response.text[:200]}")
        return None
    tally.latencies["promote"].append(time.monotonic() - promoted_at)
    events.append(f"promotion: production {previous} -> {version} at t={promoted_at - start:.0f} s")
    return previous, version


async def sample_memory(
    pids: list[int], start: float, deadline: float, every: float, samples: list[tuple[float, float]]
) -> None:
    while True:
        samples.append((time.monotonic() - start, rss_mib(pids)))
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))


async def soak(
    args: argparse.Namespace, port: int, pids: list[int]
) -> tuple[Tally, list[str], list[tuple[float, float]]]:
    tally = Tally()
    events: list[str] = []
    samples: list[tuple[float, float]] = []
    payloads = bodies(args.seed)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=REQUEST_TIMEOUT) as client:
        start = time.monotonic()
        deadline = start + args.seconds
        workers = [traffic(port, deadline, args.seed + i, payloads, tally) for i in range(args.concurrency)]
        results = await asyncio.gather(
            train_then_promote(client, start, args.seconds, tally, events),
            sample_memory(pids, start, deadline, args.sample_every, samples),
            *workers,
        )
        promotion = results[0]
        if promotion is not None:  # put the store back as it was (not measured)
            await client.put("/models/lstm/aliases/production", json={"version": promotion[0]})
    return tally, events, samples


def report(args: argparse.Namespace, tally: Tally, events: list[str], samples: list[tuple[float, float]]) -> bool:
    print(
        f"# soak: {args.seconds:g} s, concurrency {args.concurrency}, {args.workers} worker(s), torch "
        f"{torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    print("| kind | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in [*WEIGHTS, "promote"]:
        values = np.asarray(tally.latencies.get(kind, [])) * 1000
        if not len(values):
            continue
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        print(
            f"| {kind} | {len(values)} | {tally.errors[kind]} | {len(values) / args.seconds:.1f} | "
            f"{p50:.1f} | {p90:.1f} | {p99:.1f} | {values.max():.1f} |"
        )
    total = sum(len(v) for v in tally.latencies.values())
    print(f"\ntotal: {total} requests, {total / args.seconds:.0f} req/s; versions answered: {dict(tally.versions)}")
    for event in events:
        print(event)
    errors = sum(tally.errors.values())
    print(f"errors: {errors}" + "".join(f"\n  {example}" for example in tally.examples))
    warm = next(rss for t, rss in samples if t >= args.warmup)
    final = samples[-1][1]
    peak = max(rss for t, rss in samples if t >= args.warmup)
    growth = (final - warm) / warm * 100
    step = max(1, round(len(samples) / 10))
    shown = ", ".join(f"{t:.0f}s {rss:.0f}" for t, rss in samples[::step])
    print(f"server RSS (MiB), every {args.sample_every:g} s: {shown}, {samples[-1][0]:.0f}s {final:.0f}")
    print(
        f"after the {args.warmup:g} s warm-up: {warm:.1f} MiB; at the end {final:.1f} MiB ({growth:+.1f}%); "
        f"peak {peak:.1f} MiB"
    )
    ok = errors == 0 and growth < 10
    print("PASS" if ok else "FAIL")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="a model store that holds a model named lstm")
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to send traffic (default 600)")
    parser.add_argument("--concurrency", type=int, default=64, help="clients sending at once (default 64)")
    parser.add_argument("--workers", type=int, default=1, help="lstm-serve --workers (default 1)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--warmup", type=float, help="seconds before the memory baseline (default 10%% of the run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.seconds <= 0 or not 1 <= args.concurrency <= 1024:
        parser.error("--seconds must be positive and --concurrency from 1 to 1024")
    args.warmup = min(60.0, args.seconds * 0.1) if args.warmup is None else args.warmup
    log = Path(tempfile.mkdtemp(prefix="soak-")) / "serve.log"
    environment = os.environ | {"LSTM_LOG_LEVEL": "warning", "LSTM_HOST": HOST}
    try:
        server = harness.start_lstm_serve(Path(args.store), log, workers=args.workers, env=environment)
    except RuntimeError as exc:
        print(f"lstm-serve did not become ready:\n{exc}", file=sys.stderr)
        return 1
    try:
        time.sleep(1.0)  # let uvicorn's workers (if several) all start
        tally, events, samples = asyncio.run(soak(args, server.port, server_pids(server.pid)))
    finally:
        harness.stop(server, timeout=60)
    problems = [line for line in log.read_text().splitlines() if "Traceback" in line or "ERROR" in line]
    for line in problems[:5]:
        tally.error("server log", line)
    ok = report(args, tally, events, samples)
    print(f"server log: {log} ({len(problems)} error lines)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
