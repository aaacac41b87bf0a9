"""/predict latency idle and while a training job runs, in one run (a script, not a test).

    .venv/bin/python -m benchmarks.train_load --store DIR [--rounds 3] [--seconds 8] [--concurrency 8]

Starts lstm-serve (1 worker, defaults) on a store that has a model, measures small /predict
(20 x 5) with wrk idle, then submits a robust training job and measures again while it runs,
alternating for --rounds; prints medians of p50/p99 and the ratio during/idle. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

from benchmarks import harness

LUA = Path(__file__).with_name("wrk_request.lua")


def wrk(url: str, body: Path, seconds: float, connections: int) -> dict[str, float]:
    env = os.environ | {"WRK_BODY_FILE": str(body)}
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(LUA),
            f"{url}/predict",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    summary: dict[str, float] = json.loads(line.removeprefix("WRK_JSON "))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True, help="a store with a trained model (it gets one more version)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="train-load-"))
    body = work / "small.json"
    x = np.sin(0.3 * np.arange(20)[:, None] + np.arange(5)[None, :])[..., None].astype(np.float32)
    body.write_bytes(orjson.dumps({"inputs": x}, option=orjson.OPT_SERIALIZE_NUMPY))
    env = os.environ | {"LSTM_LOG_LEVEL": "warning"}
    server = harness.start_lstm_serve(Path(args.store), work / "serve.log", env=env)
    url = server.url
    try:
        wrk(url, body, 2, args.concurrency)  # warm-up
        idle: list[dict[str, float]] = []
        busy: list[dict[str, float]] = []
        for _ in range(args.rounds):
            idle.append(wrk(url, body, args.seconds, args.concurrency))
            job = httpx.post(f"{url}/train", json={"promote": "never"}).json()
            while httpx.get(f"{url}/train/{job['id']}").json()["progress"]["epoch"] < 1:
                time.sleep(0.2)  # measure while the training process really computes
            busy.append(wrk(url, body, args.seconds, args.concurrency))
            status = httpx.get(f"{url}/train/{job['id']}").json()["status"]
            httpx.delete(f"{url}/train/{job['id']}")
            if status != "running":
                print(f"warning: the job was {status} before the measurement ended")
        print(f"# lstm-serve 1 worker, small /predict, wrk -c{args.concurrency}, {args.seconds:g} s x {args.rounds}")
        print("| state | req/s | p50 ms | p99 ms | errors |")
        print("| --- | --- | --- | --- | --- |")
        for name, runs in (("idle", idle), ("training job running", busy)):
            rps = statistics.median(r["requests"] / (r["duration_us"] / 1e6) for r in runs)
            p50 = statistics.median(r["p50_us"] for r in runs) / 1000
            p99 = statistics.median(r["p99_us"] for r in runs) / 1000
            errors = sum(r["non2xx3xx"] + r["timeouts"] for r in runs)
            print(f"| {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errors} |")
        ratio = statistics.median(r["p99_us"] for r in busy) / statistics.median(r["p99_us"] for r in idle)
        print(f"p99 during training / idle: {ratio:.2f}x")
    finally:
        harness.stop(server, timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
