"""The serving benchmark's report: the markdown tables and notes of one run, section by section, and its JSON.

Each section is a function of the run's numbers (a `Summary` per cell, the starts, the floor) that returns
its lines; `report` puts them in the order docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from benchmarks.bodies import APP_KINDS, KIND_LABEL, PAYLOADS, Body
from benchmarks.floor import FLOOR_SUMS, FORWARD, NAIVE_FORWARD
from benchmarks.rounds import Results, Summary, summary_of
from benchmarks.servers import BASELINE, TRIVIAL, ServerConfig
from benchmarks.tables import fmt, median, ratio, table
from benchmarks.targets import targets_report

Bodies = dict[str, dict[str, Body]]  # payload name -> kind -> body


def floor_report(floor_us: dict[str, dict[str, float]]) -> list[str]:
    """The in-process floor: each step's µs per payload, then decode + forward + encode per route."""
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


def header(args: argparse.Namespace, info: dict[str, str], results: Results, elapsed: float) -> list[str]:
    """Command, machine, model and method."""
    out: list[str] = []
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
    return out


def payloads_and_servers(configs: Sequence[ServerConfig], bodies: Bodies) -> list[str]:
    """The payloads' sizes and what each server is."""
    out: list[str] = []
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
    return out


def errors(cell: dict[str, float]) -> int:
    """Non-2xx answers and socket errors of one cell, over its rounds."""
    return int(cell["non2xx"] + cell["socket_errors"])


def naive_of(configs: Sequence[ServerConfig]) -> str | None:
    """The naive app's name if this run measured it: the ratios' denominator."""
    return BASELINE if any(c.name == BASELINE for c in configs) else None


def throughput(
    args: argparse.Namespace, configs: Sequence[ServerConfig], summary: Summary, bodies: Bodies
) -> list[str]:
    """Req/s, latency and CPU per request: one table per payload, a row per server, route and concurrency."""
    out: list[str] = []
    baseline_name = naive_of(configs)
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
                            str(errors(s)),
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
    return out


def versus_naive(
    args: argparse.Namespace, configs: Sequence[ServerConfig], summary: Summary, bodies: Bodies
) -> list[str]:
    """Every server's req/s over the naive app's /predict, at the same payload and concurrency."""
    out: list[str] = []
    baseline_name = naive_of(configs)
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
    return out


def startup(configs: Sequence[ServerConfig], results: Results) -> list[str]:
    """Time to ready, RSS and threads per worker, supervisor RSS and restarts, per server."""
    out: list[str] = []
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
    return out


def loadgen_check(configs: Sequence[ServerConfig], summary: Summary, results: Results) -> list[str]:
    """What wrk drives on the trivial app and on /healthz, against the most it used in the model-server runs."""
    out: list[str] = []
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
                    str(errors(s)),
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
    return out


def footer(summary: Summary, results: Results) -> list[str]:
    """The error count over every measured request, and the servers that failed."""
    out: list[str] = []
    error_count = sum(errors(s) for s in summary.values())
    requests = sum(int(s["requests"]) for s in summary.values())
    out.append(f"Non-2xx responses and socket errors over all {requests} measured requests: {error_count}.")
    for failure in results.failures:
        out += ["", f"**Failed:** {failure}"]

    return out


def before_after(args: argparse.Namespace, configs: Sequence[ServerConfig], summary: Summary) -> list[str]:
    """This tree over the baseline tree (--baseline-tree), per server pair, route, payload and concurrency."""
    pairs = [(c.twin_of, c.name) for c in configs if c.twin_of is not None]
    rows = []
    for new, base in pairs:
        for payload in PAYLOADS:
            for kind in APP_KINDS["lstm"]:
                for c in args.concurrency:
                    n, b = summary.get((new, kind, payload.name, c)), summary.get((base, kind, payload.name, c))
                    if n is None or b is None:
                        continue
                    rows.append(
                        [
                            f"{new} / {base}",
                            KIND_LABEL[kind],
                            payload.name,
                            str(c),
                            f"{fmt(n['rps'], 1)} / {fmt(b['rps'], 1)}",
                            ratio(n["rps"], b["rps"]),
                            f"{fmt(n['p50_ms'])} / {fmt(b['p50_ms'])}",
                            ratio(n["p50_ms"], b["p50_ms"]),
                            ratio(n["p99_ms"], b["p99_ms"]),
                            str(errors(n) + errors(b)),
                        ]
                    )
    if not rows:
        return []
    out = [f"### Before/after: this tree over the baseline tree ({args.baseline_tree}), same run", ""]
    header = ["new / base", "route", "payload", "conc", "req/s", "req/s new/base", "p50 ms", "p50 new/base"]
    out += table([*header, "p99 new/base", "errors"], rows)
    out.append("")
    out.append(
        "Both servers serve the same store with the same settings, started in turn in every round; the baseline "
        "runs the other tree's service package (PYTHONPATH) with this tree's python and packages. req/s new/base "
        "above 1 and latency new/base below 1: this tree is faster."
    )
    out.append("")
    return out


def json_data(
    args: argparse.Namespace,
    info: dict[str, str],
    configs: Sequence[ServerConfig],
    floor_us: dict[str, dict[str, float]],
    results: Results,
    summary: Summary,
) -> dict[str, Any]:
    """Every number of the run (each round of each cell, each start) for --json."""
    error_count = sum(errors(s) for s in summary.values())
    return {
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
        "errors": error_count,
        "failures": results.failures,
    }


def report(
    args: argparse.Namespace,
    info: dict[str, str],
    configs: Sequence[ServerConfig],
    floor_us: dict[str, dict[str, float]],
    results: Results,
    bodies: Bodies,
    elapsed: float,
) -> tuple[list[str], dict[str, Any]]:
    """The run's markdown lines and its JSON document."""
    summary = summary_of(results)
    out = header(args, info, results, elapsed)
    out += targets_report(configs, summary, floor_us, results)
    out += payloads_and_servers(configs, bodies)
    out += throughput(args, configs, summary, bodies)
    out += versus_naive(args, configs, summary, bodies)
    out += before_after(args, configs, summary)
    out += startup(configs, results)
    out += floor_report(floor_us)
    out += loadgen_check(configs, summary, results)
    out += footer(summary, results)
    return out, json_data(args, info, configs, floor_us, results, summary)
