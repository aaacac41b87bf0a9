"""The serving benchmark's load generator: wrk driving one cell against a server, and its numbers parsed.

wrk runs closed loop with benchmarks/wrk_request.lua, which sends one body file and prints a WRK_JSON line of
counts and latency percentiles. Around each run the CPU of the server, of wrk and of the rest of the machine
is read, so each cell says who spent what.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bodies import Body
from benchmarks.harness import HOST, cpu_seconds, machine_busy_seconds
from benchmarks.servers import Server, wait_idle

LUA_SCRIPT = Path(__file__).with_name("wrk_request.lua")


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


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    """CPU of this process's reaped children: wrk, after each run."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
