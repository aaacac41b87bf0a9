"""Calibration of training.memory: real lstm-train runs, their peak RSS against the estimate (a script).

    .venv/bin/python -m benchmarks.train_memory [--epochs 1]

Runs `lstm-train --max-epochs N --torch-threads 1` in a fresh store for each configuration below, one at
a time, reads the child's peak RSS (ru_maxrss from wait4) and prints it beside `training.memory.estimate`
(with and without its safety factor). The estimate must stay above every measured peak.

    .venv/bin/python -m benchmarks.train_memory --limit data 700 800 --limit as 1100 1300

instead runs the default robust preset (one epoch) under each RLIMIT_DATA or RLIMIT_AS given, in MiB,
and prints whether it finished: how far above the peak RSS each kind of limit must be.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from training.config import preset
from training.memory import SAFETY, estimate

CONFIGS: list[dict[str, Any]] = [
    {"preset": "tutorial"},
    {},
    {"hidden_size": 128},
    {"hidden_size": 512},
    {"hidden_size": 32, "num_layers": 4, "batch_size": 1024},
    {"hidden_size": 64, "num_layers": 4, "batch_size": 256, "seq_len": 512, "short_batch_size": 0},
]


def peak_rss_mib(overrides: dict[str, Any], epochs: int, rlimit: tuple[int, int] | None = None) -> float:
    """The peak RSS of one lstm-train run (under `rlimit`: (resource kind, MiB) if given); raises if it fails."""
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in overrides.items()]

    def limit() -> None:
        if rlimit is not None:
            resource.setrlimit(rlimit[0], (rlimit[1] << 20, rlimit[1] << 20))

    with tempfile.TemporaryDirectory(prefix="train-memory-") as store:
        child = subprocess.Popen(
            [sys.executable, "-m", "training", "--store", store, "--promote", "never", "--json", "--no-progress"]
            + ["--torch-threads", "1", "--max-epochs", str(epochs), "--memory-budget-mb", "0", *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if rlimit is not None else None,
            preexec_fn=limit,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise RuntimeError(f"lstm-train {' '.join(flags)} exited with {child.returncode}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (default: %(default)s)")
    parser.add_argument(
        "--limit", nargs="+", action="append", metavar="KIND_THEN_MIB", help="data or as, then limits in MiB"
    )
    args = parser.parse_args(argv)
    if args.limit:
        kinds = {"data": resource.RLIMIT_DATA, "as": resource.RLIMIT_AS}
        for kind, *limits in args.limit:
            for mib in limits:
                try:
                    peak = peak_rss_mib({}, args.epochs, (kinds[kind], int(mib)))
                    print(f"RLIMIT_{kind.upper()} {mib} MiB: finished, peak RSS {peak:.0f} MiB", flush=True)
                except RuntimeError:
                    print(f"RLIMIT_{kind.upper()} {mib} MiB: failed", flush=True)
        return 0
    print(
        f"| run | measured peak RSS, MiB | estimate without the x{SAFETY:g} factor | estimate | estimate / measured |"
    )
    print("| --- | --- | --- | --- | --- |")
    for overrides in CONFIGS:
        name = overrides.get("preset", "robust")
        params = {key: value for key, value in overrides.items() if key != "preset"}
        found = estimate(preset(name).with_overrides(params))
        measured = peak_rss_mib(overrides, args.epochs)
        label = name + (" " + " ".join(f"{key}={value}" for key, value in params.items()) if params else "")
        raw = found.peak_mib / SAFETY
        print(f"| {label} | {measured:.0f} | {raw:.0f} | {found.peak_mib:.0f} | {found.peak_mib / measured:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
