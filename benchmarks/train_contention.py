"""Training time alone and beside one busy loop per core of the CPU budget (a script, not a test).

    .venv/bin/python -m benchmarks.train_contention [--epochs 60] [--rounds 3] [--variants old new]

Runs `lstm-train --preset robust --max-epochs N` in a fresh store for each variant, alone and then
beside `cpu_budget().threads` busy loops (`python -c 'while True: pass'`, started and killed here, and
each bounded in time so none outlives a crashed run), alternating variants and conditions round by
round so drift in the machine's load hits all of them alike. Prints the median training seconds
(lstm-train's own `seconds`: training, evaluation and export, without the imports) per variant and
condition, and the ratio busy/alone. Variants:

    old         torch's own thread count (what lstm-train used before it read the CPU budget)
    new         lstm-train's defaults (no thread flag, its own environment)
    1           --torch-threads 1
    2           --torch-threads 2
    2-passive   --torch-threads 2 with OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep instead of spinning)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import model_store

BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")


def torch_default_threads() -> int:
    """torch's own intra-op thread count in a fresh process without thread variables."""
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def clean_environment() -> dict[str, str]:
    """This environment without LSTM_ settings and thread variables, so only the variant decides."""
    return {
        key: value for key, value in os.environ.items() if not key.startswith("LSTM_") and key not in THREAD_VARIABLES
    }


def variant(name: str, torch_default: int) -> tuple[list[str], dict[str, str]]:
    """Extra lstm-train flags and environment of a variant."""
    if name == "old":
        return ["--torch-threads", str(torch_default)], {}
    if name == "new":
        return [], {}
    if name == "2-passive":
        return ["--torch-threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}
    if name.isdigit():
        return ["--torch-threads", name], {}
    raise SystemExit(f"unknown variant {name!r}; expected old, new, 2-passive or a thread count")


@contextmanager
def busy_loops(count: int, seconds: float) -> Iterator[None]:
    """`count` single-threaded busy loops for the duration of the block (each ends by itself after `seconds`)."""
    loops = [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=seconds)], env=clean_environment())
        for _ in range(count)
    ]
    try:
        time.sleep(0.5)  # let them start spinning before the measurement does
        yield
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait()


def train_seconds(epochs: int, flags: list[str], extra_env: dict[str, str], timeout: float) -> float:
    """lstm-train's own `seconds` for one run; `timeout` (a lower bound) when it took longer and was stopped."""
    with tempfile.TemporaryDirectory(prefix="train-contention-") as store:
        try:
            out = subprocess.run(
                [sys.executable, "-m", "training", "--store", store, "--preset", "robust", "--max-epochs", str(epochs)]
                + ["--promote", "never", "--json", "--no-progress", *flags],
                env=clean_environment() | extra_env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
            )
        except subprocess.TimeoutExpired:
            return timeout
    seconds: float = json.loads(out.stdout.splitlines()[-1])["seconds"]
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60, help="robust epochs per run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per variant and condition (default: %(default)s)")
    parser.add_argument("--variants", nargs="+", default=["old", "new"], help="default: old new")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds one training run may take (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw times here")
    args = parser.parse_args(argv)
    budget = model_store.cpu_budget()
    torch_default = torch_default_threads()
    print(f"CPU budget: {budget.describe()}; busy loops: {budget.threads}; torch's default threads: {torch_default}")
    print(f"a run stopped at --timeout counts as {args.timeout:g} s (a lower bound)", flush=True)
    times: dict[str, dict[str, list[float]]] = {name: {"alone": [], "busy": []} for name in args.variants}
    for round_number in range(1, args.rounds + 1):
        for name in args.variants:
            flags, extra_env = variant(name, torch_default)
            alone = train_seconds(args.epochs, flags, extra_env, args.timeout)
            print(f"round {round_number} {name}: alone {alone:.1f} s", flush=True)
            with busy_loops(budget.threads, args.timeout + 5):
                busy = train_seconds(args.epochs, flags, extra_env, args.timeout)
            times[name]["alone"].append(alone)
            times[name]["busy"].append(busy)
            print(f"round {round_number} {name}: beside {budget.threads} busy loops {busy:.1f} s", flush=True)
    print()
    print(f"robust preset, {args.epochs} epochs, medians of {args.rounds} rounds")
    print("| variant | alone, s | beside busy loops, s | busy / alone |")
    print("| --- | --- | --- | --- |")
    for name, measured in times.items():
        alone, busy = statistics.median(measured["alone"]), statistics.median(measured["busy"])
        print(f"| {name} | {alone:.1f} | {busy:.1f} | {busy / alone:.2f}× |")
    if args.json is not None:
        args.json.write_text(json.dumps({"budget": budget.describe(), "epochs": args.epochs, "times": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
