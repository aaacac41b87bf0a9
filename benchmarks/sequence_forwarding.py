"""What forwarding a chunk to its owner costs: a real lstm-serve --workers 2, one keep-alive connection.

    python -m benchmarks.sequence_forwarding [--chunks 500]

The connection stays on one worker. Chunks of a sequence that worker owns run where they land; chunks of a
sequence the other worker owns are forwarded over the peer socket (service/sequence_router.py). Prints, for each,
the per-chunk latency (p50, p99) seen by the client and the CPU the server's processes spent per chunk. One-sample
OIP JSON chunks, the default model shape (hidden 32, one layer), untrained.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import harness
from benchmarks.sequences import build_store
from service.peers import owner_of

INFER = "/v2/models/lstm/infer"


def chunk(sample: float, sequence_id: str, start: bool = False) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 1], "data": [sample]}],
        "parameters": {"sequence_id": sequence_id, "sequence_start": start},
    }


def forwarded_ok(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = re.search(r'^lstm_sequence_forwarded_steps_total\{outcome="ok"\} ([0-9.e+]+)$', text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def owned_by(index: int, prefix: str) -> str:
    return next(f"{prefix}-{n}" for n in range(1, 1000) if owner_of("lstm", f"{prefix}-{n}", 2) == index)


def run(server: harness.ServeProcess, chunks: int) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:  # one keep-alive connection: one worker
        probe = owned_by(0, "probe")
        before = forwarded_ok(server.url)
        assert client.post(INFER, json=chunk(0.0, probe, start=True)).status_code == 200
        here = 1 if forwarded_ok(server.url) > before else 0  # forwarded: the connection is on worker 1
        for label, sequence_id in (
            ("runs where it lands", owned_by(here, "local")),
            ("forwarded", owned_by(1 - here, "far")),
        ):
            assert client.post(INFER, json=chunk(0.0, sequence_id, start=True)).status_code == 200
            for t in range(50):  # warm up
                client.post(INFER, json=chunk(float(np.sin(0.1 * t)), sequence_id))
            latencies = []
            cpu = harness.cpu_seconds(server.tree())
            for t in range(chunks):
                started = time.perf_counter()
                answer = client.post(INFER, json=chunk(float(np.sin(0.1 * t)), sequence_id))
                latencies.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
            cpu_us = (harness.cpu_seconds(server.tree()) - cpu) / chunks * 1e6
            p50 = statistics.median(latencies) * 1e3
            p99 = float(np.percentile(latencies, 99)) * 1e3
            print(
                f"{label:20s}: p50 {p50:6.2f} ms, p99 {p99:6.2f} ms, server CPU {cpu_us:7.1f} µs/chunk "
                f"({chunks} chunks)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=500, help="one-sample chunks measured per case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp) / "store")
        server = harness.start_lstm_serve(
            store.root, Path(tmp) / "serve.log", workers=2, args=["--log-level", "warning"]
        )
        with harness.running(server):
            run(server, args.chunks)


if __name__ == "__main__":
    main()
