"""The serving benchmark's rounds: one server started, its answers checked, warmed up and loaded cell by cell.

A cell is (server, kind, payload, concurrency); `Results` gathers every round's wrk measurement per cell and
what each start of each server showed (time to ready, memory, threads, restarts).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import model_store
from benchmarks import harness
from benchmarks.bodies import APP_KINDS, KIND_LABEL, KINDS, Body, decode_answer, sines
from benchmarks.loadgen import Measurement, run_wrk, wait_quiet
from benchmarks.servers import Server, ServerConfig, http_request, running, wait_idle
from benchmarks.tables import median


def concurrencies(args: argparse.Namespace, payload: str) -> list[int]:
    """The connection counts to measure `payload` at: --cells' for it when given, else every --concurrency."""
    cells: dict[str, list[int]] | None = args.cells
    if cells is not None:
        return sorted(cells.get(payload, []))
    return sorted(args.concurrency)


@dataclass
class ServerRound:
    """What one start of one server showed."""

    ready_s: float
    all_ready_s: float
    worker_rss_mib: list[float]
    worker_threads: list[int]
    supervisor_rss_mib: float | None
    worker_restarts: int


Cell = tuple[str, str, str, int]  # (server name, kind, payload name or "-", connections)
Summary = dict[Cell, dict[str, float]]  # a cell's medians (and sums) over rounds: what the report quotes


@dataclass
class Results:
    cells: dict[Cell, list[Measurement]] = field(default_factory=dict)
    starts: dict[str, list[ServerRound]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, key: Cell, measurement: Measurement) -> None:
        self.cells.setdefault(key, []).append(measurement)


def summarise(cells: list[Measurement]) -> dict[str, float]:
    """One cell's rounds in one row: medians of the rates, latencies and CPU shares, sums of counts."""
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


def summary_of(results: Results) -> Summary:
    return {key: summarise(cells) for key, cells in results.cells.items()}


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
        kinds = [kind for kind in KINDS if kind in APP_KINDS[config.app] and kind in args.routes]
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
            cells = [(kind, bodies[p][kind], c) for p in bodies for kind in kinds for c in concurrencies(args, p)]
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
        supervisor = None if server.workers == [server.pid] else harness.rss_mib(server.pid)
        results.starts.setdefault(config.name, []).append(
            ServerRound(
                ready_s=server.ready_s,
                all_ready_s=server.all_ready_s,
                worker_rss_mib=[harness.rss_mib(pid) for pid in server.workers],
                worker_threads=[harness.thread_count(pid) for pid in server.workers],
                supervisor_rss_mib=supervisor,
                worker_restarts=server.worker_restarts(),
            )
        )
