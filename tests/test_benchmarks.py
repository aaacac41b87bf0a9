"""The benchmark package imports, its report turns a synthetic run into the tables, and its command line starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.bodies import PAYLOADS, make_bodies
from benchmarks.floor import FLOOR_SUMS, FORWARD, NAIVE_FORWARD, PREDICT_DECODE_GC
from benchmarks.loadgen import Measurement
from benchmarks.report import report
from benchmarks.rounds import Results, ServerRound
from benchmarks.servers import SERVERS, baseline_twins
from benchmarks.serving import build_parser

REPO = Path(__file__).resolve().parent.parent
INFO_KEYS = "commit nproc cpu memory kernel python torch numpy orjson fastapi starlette pydantic uvicorn uvloop"
INFO_KEYS += " httptools wrk model"  # and "thread env", below


def measured(rps: float, p50_ms: float, requests: int = 400) -> Measurement:
    return Measurement(
        connections=32,
        duration_s=2,
        requests=requests,
        seconds=2.0,
        rps=rps,
        p50_ms=p50_ms,
        p90_ms=2 * p50_ms,
        p99_ms=4 * p50_ms,
        max_ms=5 * p50_ms,
        non2xx=0,
        socket_errors=0,
        drain_s=0.0,
        server_cpu_us_per_req=1000.0,
        wrk_cpu_us_per_req=50.0,
        server_cores=1.0,
        wrk_cores=0.1,
        other_cores=0.0,
    )


def test_the_report_tables_a_synthetic_before_after_run(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--baseline-tree", "/base", "--concurrency", "32"])
    args.cells = None
    lstm, naive = SERVERS[0], SERVERS[-1]
    configs = [lstm, naive, *baseline_twins([lstm], Path("/base"))]
    assert [c.name for c in configs] == ["lstm w1", "naive", "base w1"]
    results = Results()
    for name, rps, p50 in (("lstm w1", 200.0, 5.0), ("base w1", 100.0, 10.0), ("naive", 50.0, 20.0)):
        for r, p in ((rps * 0.9, p50 * 1.1), (rps, p50), (rps * 1.1, p50 * 0.9)):  # three rounds; medians: the middle
            results.add((name, "predict", "small", 32), measured(r, p))
    results.starts["lstm w1"] = [ServerRound(1.5, 2.0, [300.0], [12], None, 0)]
    steps = {FORWARD, NAIVE_FORWARD, PREDICT_DECODE_GC, *(step for pair in FLOOR_SUMS.values() for step in pair)}
    floor_us = {p.name: dict.fromkeys(sorted(steps), 10.0) for p in PAYLOADS}
    bodies = {p.name: make_bodies(p, "input", tmp_path) for p in PAYLOADS}
    info = dict.fromkeys([*INFO_KEYS.split(), "thread env"], "x")

    lines, data = report(args, info, configs, floor_us, results, bodies, elapsed=60.0)

    text = "\n".join(lines)
    assert "### Before/after: this tree over the baseline tree (/base), same run" in lines
    assert (
        "| lstm w1 / base w1 | /predict | small | 32 | 200 / 100 | 2.00× | 5.00 / 10.00 | 0.50× | 0.50× | 0 |" in lines
    )
    assert "| small /predict c=32: ≥ 2× naive req/s | lstm w1 | 200 vs 50 req/s = 4.00× | yes |" in lines
    assert "| small | 32 | 50.0 | 4.00× | - | - | 2.00× | - | - |" in lines  # req/s over naive, per server and route
    assert "| lstm w1 | /predict | 32 | 2 s, 400 | 200 | 180–220 | 5.00 | 20.00 | 4.00× | 4.00× | 4.00× |" in text
    assert "| lstm w1 | 1.50 (1.50–1.50) | 2.00 (2.00–2.00) | 300 | 12 | - | 0 |" in lines
    assert "| /predict floor (orjson) | 30.0 µs = 33333 req/s per core | 30.0 µs = 33333 req/s per core |" in lines
    assert lines[-1] == "Non-2xx responses and socket errors over all 3600 measured requests: 0."
    assert data["errors"] == 0 and len(data["cells"]) == 3
    assert {s["name"]: s["twin_of"] for s in data["servers"]} == {"lstm w1": None, "naive": None, "base w1": "lstm w1"}


def test_the_serving_benchmark_command_line_answers_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for option in ("--baseline-tree", "--cells", "--routes", "--servers", "--concurrency", "--json"):
        assert option in done.stdout


def test_the_report_render_benchmark_command_line_answers_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.report_render", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--baseline-tree", "--rounds"):
        assert option in done.stdout
