"""A worker's memory across many distinct input shapes, and the forward speed the cache bound costs (a script).

    .venv/bin/python -m benchmarks.memory_shapes [--lengths 2000] [--batches 2000] [--capacities 1024 256]

For each oneDNN cache capacity (`LSTM_ONEDNN_CACHE_CAPACITY`; 1024 is oneDNN's own default, what
the service ran with before it set one) it starts a real `lstm-serve` (1 worker, 127.0.0.1) on a
store holding an untrained model of the default size (2 layers of 32), sends one /predict for each
sequence length 1..N (batch 1) and then for each batch size 1..M (10 steps), and prints the
worker's RSS (VmRSS, through psutil) before, after the lengths and after the batch sizes.

Then, in fresh processes with each capacity, alternated over --rounds, it times the forward pass
alone: a small (20 x 5) and a large (500 x 64) input repeated, and a cycle of --cycle distinct
shapes (a service whose traffic has more distinct shapes than the cache holds rebuilds kernels on
every call). Prints medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import orjson
import torch

import model_store
from benchmarks import harness
from benchmarks.harness import rss_mib
from training import LSTMRegressor, ModelConfig

PROBE = """
import os, sys, time
os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = sys.argv[1]
import torch
import model_store
torch.set_num_threads(1)
module = model_store.ModelStore(sys.argv[2]).load("lstm", 1).module
cycle = int(sys.argv[3])

def per_call_us(shapes, repeats):
    inputs = [torch.zeros(seq, batch, 1) for seq, batch in shapes]
    with torch.inference_mode():
        for x in inputs:
            module(x)
        started = time.perf_counter()
        for _ in range(repeats):
            for x in inputs:
                module(x)
    return (time.perf_counter() - started) / (repeats * len(inputs)) * 1e6

print(per_call_us([(20, 5)], 400), per_call_us([(500, 64)], 10), per_call_us([(20, b) for b in range(1, cycle + 1)], 3))
"""


def make_store(root: Path) -> None:
    """A store with one untrained model of the default size (2 layers of 32 hidden units)."""
    torch.manual_seed(0)
    store = model_store.ModelStore(root)
    module = model_store.script(LSTMRegressor(ModelConfig(hidden_size=32, num_layers=2)))
    spec = model_store.sequence_spec
    store.save("lstm", module, inputs=(spec("input", 1),), outputs=(spec("output", 1),), params={"seed": 0})


def body(seq: int, batch: int) -> bytes:
    x = np.sin(0.1 * np.arange(seq)[:, None] + np.arange(batch)[None, :])[..., None].astype(np.float32)
    return orjson.dumps({"inputs": x}, option=orjson.OPT_SERIALIZE_NUMPY)


def serve_shapes(store: Path, capacity: int, lengths: int, batches: int, batch_seq: int) -> tuple[float, ...]:
    """(RSS before, after the lengths, after the batch sizes) of a real one-worker lstm-serve, MiB."""
    env = os.environ | {"LSTM_LOG_LEVEL": "warning", "LSTM_ONEDNN_CACHE_CAPACITY": str(capacity)}
    log = store.with_name(f"serve-{capacity}.log")
    with (
        harness.running(harness.start_lstm_serve(store, log, env=env, new_session=True)) as server,
        httpx.Client(base_url=server.url, timeout=120, headers={"content-type": "application/json"}) as client,
    ):

        def predict(seq: int, batch: int) -> None:
            response = client.post("/predict", content=body(seq, batch))
            response.raise_for_status()

        predict(20, 5)
        before = rss_mib(server.pid)
        for seq in range(1, lengths + 1):
            predict(seq, 1)
        after_lengths = rss_mib(server.pid)
        for batch in range(1, batches + 1):
            predict(batch_seq, batch)
        return before, after_lengths, rss_mib(server.pid)


def forward_speed(store: Path, capacity: int, cycle: int) -> tuple[float, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(capacity), str(store), str(cycle)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    small, large, cycled = (float(value) for value in out)
    return small, large, cycled


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, default=2000, help="sequence lengths 1..N sent (default: %(default)s)")
    parser.add_argument("--batches", type=int, default=2000, help="batch sizes 1..M sent (default: %(default)s)")
    parser.add_argument("--batch-seq", type=int, default=10, help="steps of the batch-size requests")
    parser.add_argument("--capacities", type=int, nargs="+", default=[1024, 256], help="default: 1024 256")
    parser.add_argument("--rounds", type=int, default=3, help="forward-speed rounds (default: %(default)s)")
    parser.add_argument("--cycle", type=int, default=512, help="distinct shapes in the cycled forward (default: 512)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="memory-shapes-") as folder:
        store = Path(folder) / "store"
        make_store(store)
        print(
            f"RSS of one lstm-serve worker, MiB ({args.lengths} lengths x batch 1, then batch sizes 1..{args.batches}"
        )
        print(f"x {args.batch_seq} steps, one /predict each; default model 2x32)")
        print("| cache capacity | before | after lengths | after batch sizes | growth |")
        print("| --- | --- | --- | --- | --- |")
        for capacity in args.capacities:
            before, lengths, batches = serve_shapes(store, capacity, args.lengths, args.batches, args.batch_seq)
            print(f"| {capacity} | {before:.0f} | {lengths:.0f} | {batches:.0f} | +{batches - before:.0f} |")
        speeds: dict[int, list[tuple[float, float, float]]] = {capacity: [] for capacity in args.capacities}
        for _ in range(args.rounds):
            for capacity in args.capacities:
                speeds[capacity].append(forward_speed(store, capacity, args.cycle))
        print()
        print(f"forward pass alone, 1 torch thread, median µs per call of {args.rounds} alternated rounds")
        cycled = f"cycle of {args.cycle} shapes (20 x 1..{args.cycle})"
        print(f"| cache capacity | 20 x 5 repeated | 500 x 64 repeated | {cycled} |")
        print("| --- | --- | --- | --- |")
        for capacity, rounds in speeds.items():
            small, large, cycled = (statistics.median(values) for values in zip(*rounds, strict=True))
            print(f"| {capacity} | {small:.0f} | {large:.0f} | {cycled:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
