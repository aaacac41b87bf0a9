"""Forward time per runtime (TorchScript, ONNX Runtime) x model x shape, in one process, the runtimes alternated.

Each round times every (model, shape, runtime) once, in turn, so a busy machine slows all of them alike; the
table gives each one's median over the rounds and the speed-up over TorchScript (TorchScript's median divided
by the other's), for ONNX Runtime on every call and for what LSTM_RUNTIME=auto does (ONNX Runtime up to
LSTM_ONNX_MAX_ELEMENTS elements or one sequence, TorchScript above).
Both run one thread (torch.set_num_threads(1); ONNX Runtime's intra-op threads 1), as the service does by
default, through the service's own runtime classes. The models are LSTMRegressor with the default preset's
shape (2 x 32) and the tutorial's (1 x 16) unless --store names trained versions; weights do not change the cost.

    python -m benchmarks.runtimes [--rounds 15] [--store DIR --models lstm:1,lstm:2] [--shapes "100,1;100,8"]
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import model_store
from service import runtimes
from training.export import eager_of, onnx_files
from training.model import LSTMRegressor, ModelConfig

SHAPES: tuple[tuple[int, int, int], ...] = ((20, 5, 1), (100, 1, 1), (500, 64, 1))
BUILT = {"default 2x32": ModelConfig(hidden_size=32, num_layers=2), "tutorial 1x16": ModelConfig(hidden_size=16)}


def per_call_us(fn: Callable[[], object], target_s: float) -> float:
    """Mean µs per call over about target_s (at least 3 calls), with the cyclic collector off (as timeit)."""
    started = time.perf_counter()
    fn()
    number = max(3, int(target_s / max(time.perf_counter() - started, 1e-7)))
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - started) / number * 1e6
    finally:
        gc.enable()


def built(store: model_store.ModelStore) -> dict[str, tuple[str, int]]:
    """Untrained versions of the built-in shapes, saved with ONNX files into `store`: label -> (name, version)."""
    found = {}
    for index, (label, config) in enumerate(BUILT.items()):
        torch.manual_seed(index)
        scripted = model_store.script(LSTMRegressor(config))
        eager, _ = eager_of(scripted)
        entry, files = onnx_files(eager, config, seed=index, references=(scripted,))
        name = f"bench{index}"
        manifest = store.save(
            name,
            scripted,
            inputs=(model_store.sequence_spec("input", 1),),
            outputs=(model_store.sequence_spec("output", 1),),
            extra_files=files,
            onnx=entry,
        )
        found[label] = (name, manifest.version)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="alternated rounds (default 15)")
    parser.add_argument("--target-ms", type=float, default=40.0, help="time per measurement (default 40 ms)")
    parser.add_argument("--store", type=Path, help="a store whose versions to time (they need ONNX files)")
    parser.add_argument("--models", default="", help="with --store: NAME:VERSION,... (default: the built-in shapes)")
    parser.add_argument(
        "--onnx-max-elements", type=int, default=512, help="auto's LSTM_ONNX_MAX_ELEMENTS (default 512)"
    )
    parser.add_argument(
        "--shapes", default="", help="SEQ,BATCH;... instead of (20,5,1), (100,1,1), (500,64,1) (input size 1)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.store is None:
        import tempfile

        store = model_store.ModelStore(Path(tempfile.mkdtemp(prefix="bench-runtimes-")))
        versions = built(store)
    else:
        store = model_store.ModelStore(args.store)
        versions = {ref: (ref.split(":")[0], int(ref.split(":")[1])) for ref in args.models.split(",") if ref}
    engines: dict[tuple[str, str], runtimes.Runtime] = {}
    choices: tuple[runtimes.RuntimeChoice, ...] = ("torchscript", "onnxruntime", "auto")
    for label, (name, version) in versions.items():
        loaded = store.load(name, version)
        for choice in choices:
            engine = runtimes.choose(store, loaded, choice, auto_max_elements=args.onnx_max_elements)
            if engine.name != choice and choice != "auto":
                raise SystemExit(f"{name} version {version} cannot run in {choice}: {engine.note}")
            engines[(label, choice)] = engine
    shapes = SHAPES
    if args.shapes:
        shapes = tuple((int(p.split(",")[0]), int(p.split(",")[1]), 1) for p in args.shapes.split(";"))
    inputs = {shape: np.random.default_rng(0).standard_normal(shape).astype(np.float32) for shape in shapes}
    samples: dict[tuple[str, tuple[int, int, int], str], list[float]] = {}
    for _ in range(args.rounds):
        for label in versions:
            for shape, x in inputs.items():
                for runtime in choices:
                    engine = engines[(label, runtime)]
                    us = per_call_us(functools.partial(engine, x), args.target_ms / 1000)
                    samples.setdefault((label, shape, runtime), []).append(us)
    worst = 0.0
    for label in versions:
        for x in inputs.values():
            a, b = engines[(label, "torchscript")](x), engines[(label, "onnxruntime")](x)
            worst = max(worst, float(np.abs(a - b).max()))
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, one thread each,")
    print(f"{args.rounds} alternated rounds of ~{args.target_ms:g} ms per cell; max |onnx - torchscript| {worst:.2g}")
    print()
    print(
        f"auto: ONNX Runtime for one sequence or up to {args.onnx_max_elements} elements, TorchScript above "
        "(LSTM_ONNX_MAX_ELEMENTS)"
    )
    print()
    print("| model | shape | TorchScript µs | ONNX Runtime µs | ratio | auto µs | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for label in versions:
        for shape in shapes:
            ts, ort, auto = (statistics.median(samples[(label, shape, choice)]) for choice in choices)
            print(f"| {label} | {shape} | {ts:,.0f} | {ort:,.0f} | {ts / ort:.2f}x | {auto:,.0f} | {ts / auto:.2f}x |")


if __name__ == "__main__":
    main()
