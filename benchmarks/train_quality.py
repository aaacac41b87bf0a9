"""Train both presets and print training time and held-out MSE per sampling step (a script, not a test).

.venv/bin/python -m benchmarks.train_quality [--seeds 0 1 2] [--store DIR]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

import model_store
from training import PRESET_NAMES, preset, run
from training.evaluate import SUITE_LENGTHS, SUITE_STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="robust preset seeds")
    parser.add_argument("--store", help="store folder (default: a temporary one)")
    args = parser.parse_args()
    root = args.store or tempfile.mkdtemp(prefix="train-quality-")
    store = model_store.ModelStore(root)
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    runs = [(name, seed) for name in PRESET_NAMES for seed in (args.seeds if name == "robust" else [0])]
    header = "| preset | seed | epochs | train s | worst MSE | worst at | tutorial test MSE |"
    print(header)
    print("| --- | --- | --- | --- | --- | --- | --- |")
    results = []
    for name, seed in runs:
        started = time.perf_counter()
        result = run(preset(name).with_overrides({"seed": seed}), store, name=f"{name}-quality")
        wall = time.perf_counter() - started
        metrics = result.manifest.metrics
        results.append((name, seed, metrics))
        worst = metrics["worst_case"]
        print(
            f"| {name} | {seed} | {result.epochs} | {wall:.1f} | {metrics['worst_mse']:.2e} | "
            f"step {worst['step']}, length {worst['length']} | {metrics['tutorial_test_mse']:.2e} |",
            flush=True,
        )
    print()
    print("Held-out MSE per sampling step (rad/sample), worst over lengths " + ", ".join(map(str, SUITE_LENGTHS)))
    print("| preset | seed | " + " | ".join(f"{s:g}" for s in SUITE_STEPS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in SUITE_STEPS) + " |")
    for name, seed, metrics in results:
        by_step = metrics["mse_by_step"]
        cells = " | ".join(f"{max(by_step[f'{s:g}'].values()):.1e}" for s in SUITE_STEPS)
        print(f"| {name} | {seed} | {cells} |")


if __name__ == "__main__":
    main()
