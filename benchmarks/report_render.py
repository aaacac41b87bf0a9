"""What the report picture costs a training process: importing training.report and one render, this tree vs another.

python -m benchmarks.report_render [--baseline-tree PATH] [--rounds 5]

Every lstm-train process imports training.report and renders one report.png, and the test suite starts about a
hundred of them, so both costs count. Each round runs one fresh Python process per tree (alternated, so a busy
machine slows both alike) that imports the module, then renders the figure for an untrained default-sized model;
the table gives medians in ms and this tree's ratio to the baseline (`git worktree add /tmp/base COMMIT`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys, time
import torch
from training import LSTMRegressor, ModelConfig
start = time.perf_counter()
from training.report import render
imported = time.perf_counter()
model = LSTMRegressor(ModelConfig(hidden_size=32, num_layers=2)).eval()
begin = time.perf_counter()
png = render(model, [1.0 / (epoch + 1) for epoch in range(100)], "probe")
done = time.perf_counter()
print(json.dumps({"import_ms": 1e3 * (imported - start), "render_ms": 1e3 * (done - begin), "png_bytes": len(png)}))
"""


def probe(tree: Path) -> dict[str, float]:
    """One fresh process importing and rendering from `tree`."""
    run = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tree, capture_output=True, text=True, check=True, timeout=300
    )
    result: dict[str, float] = json.loads(run.stdout.splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", type=Path, help="another source tree to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    trees = {"this tree": REPO} | ({"baseline": args.baseline_tree.resolve()} if args.baseline_tree else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(probe(tree))
    print("| tree | import ms (median) | render ms (median) | png bytes |")
    print("|---|---:|---:|---:|")
    medians = {
        name: {key: statistics.median(run[key] for run in results) for key in results[0]}
        for name, results in runs.items()
    }
    for name, median in medians.items():
        print(f"| {name} | {median['import_ms']:.0f} | {median['render_ms']:.0f} | {median['png_bytes']:.0f} |")
    if "baseline" in medians:
        ours, base = medians["this tree"], medians["baseline"]
        total = (ours["import_ms"] + ours["render_ms"]) / (base["import_ms"] + base["render_ms"])
        print(
            f"\nthis tree / baseline: import {ours['import_ms'] / base['import_ms']:.2f}×, "
            f"render {ours['render_ms'] / base['render_ms']:.2f}×, both {total:.2f}×"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
