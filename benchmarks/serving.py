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
variable, plus their configuration's variables (see benchmarks/servers.py). CPU-heavy: run it under the CPU lock.

Before/after in one run: --baseline-tree PATH (e.g. `git worktree add /tmp/base COMMIT`) adds, for each
lstm-serve configuration, its twin run from that tree ("lstm w1" -> "base w1": this venv's python with
PYTHONPATH=PATH, so that tree's service, model_store and training packages are imported; checked before the
run), and a table of ratios new/base per route, payload and concurrency. A quick check of the cells that matter
(small at c=32, large at c=1, on every route; a few minutes):

    flock /tmp/cpu.lock .venv/bin/python -m benchmarks.serving --store /tmp/bench-store --baseline-tree /tmp/base \
        --servers "lstm w1" --cells small:32 large:1 --no-loadgen-check

This module is the command line; the pieces are bodies (requests), servers, loadgen (wrk), floor (in-process),
rounds (one server's round), targets and report (markdown), harness (processes, shared with the tests).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

import model_store
from benchmarks.bodies import KINDS, MODEL, PAYLOADS, make_bodies
from benchmarks.floor import floor
from benchmarks.machine import machine
from benchmarks.report import floor_report, report
from benchmarks.rounds import Results, measure_server
from benchmarks.servers import OPTIONAL_SERVERS, SERVERS, TRIVIAL, baseline_twins, check_tree


def cell_spec(text: str) -> tuple[str, int]:
    """PAYLOAD:CONNECTIONS, e.g. small:32."""
    payload, _, connections = text.partition(":")
    if payload not in {p.name for p in PAYLOADS} or not connections.isdigit() or int(connections) < 1:
        raise argparse.ArgumentTypeError(f"expected PAYLOAD:CONNECTIONS with PAYLOAD one of small, large: {text!r}")
    return payload, int(connections)


KNOWN = {c.name: c for c in (*SERVERS, *OPTIONAL_SERVERS)}


def build_parser() -> argparse.ArgumentParser:
    known = KNOWN
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
    parser.add_argument(
        "--routes",
        nargs="+",
        choices=KINDS,
        default=list(KINDS),
        help="routes (kinds) to load: predict, oip_json, oip_binary (default: all)",
    )
    parser.add_argument(
        "--cells",
        nargs="+",
        type=cell_spec,
        metavar="PAYLOAD:CONN",
        help="only these payload and concurrency pairs, e.g. small:32 large:1 (instead of --payloads x --concurrency)",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        metavar="PATH",
        help="also run each lstm-serve configuration from this source tree (a git worktree of an older commit), "
        "named 'base ...', and report new/base ratios",
    )
    parser.add_argument("--wrk", default="wrk", help="wrk executable (default wrk)")
    parser.add_argument("--json", type=Path, help="also write every number as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    known = KNOWN
    parser = build_parser()
    args = parser.parse_args(argv)
    if shutil.which(args.wrk) is None:
        parser.error(f"{args.wrk} not found; install it (Debian: apt-get install wrk)")
    configs = [known[name] for name in args.servers] if args.servers else list(SERVERS)
    if args.cells is not None:
        cells: dict[str, list[int]] = {}
        for payload, connections in args.cells:
            cells.setdefault(payload, []).append(connections)
        args.cells, args.payloads = cells, [p for p in args.payloads if p in cells]
        args.concurrency = sorted({c for conns in cells.values() for c in conns})
    if args.baseline_tree is not None:
        twins = baseline_twins(configs, args.baseline_tree)
        if not twins:
            parser.error("--baseline-tree needs at least one lstm-serve server (--servers 'lstm w1' ...)")
        for twin in twins:
            try:
                where = check_tree(twin)
            except RuntimeError as exc:
                parser.error(str(exc))
            print(f"{twin.name}: {where['service']}", file=sys.stderr, flush=True)
        configs += twins

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
