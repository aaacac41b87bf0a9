"""Stateful sequences in one process, through the data plane (no HTTP): prints CPU per new sample.

    python -m benchmarks.sequences [--sequences 1000] [--rounds 20]

1. A new sample on a live sequence (one-sample chunk from the kept state) against the naive way, resending the
   whole history (a one-shot forward of history + 1 samples), at histories of 100 and 1,000 samples.
2. 1,000 live sequences stepping one sample each, all at once, with sequence batching on and off: CPU per step
   and wall time per round.

The model is the default shape (hidden 32, one layer), untrained: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import model_store
from service import Settings
from service.components import Components
from service.sequence_types import SequenceStep
from training import LSTMRegressor, ModelConfig, sequence_support


def build_store(root: Path) -> model_store.ModelStore:
    store = model_store.ModelStore(root)
    torch.manual_seed(0)
    config = ModelConfig()
    module = model_store.script(LSTMRegressor(config))
    store.save(
        "lstm",
        module,
        inputs=(model_store.sequence_spec("input", 1),),
        outputs=(model_store.sequence_spec("output", 1),),
        sequence=sequence_support(module, config, 0),
    )
    return store


def one(sample: float) -> np.ndarray:
    return np.full((1, 1, 1), sample, np.float32)


async def per_sample(components: Components, history: int, samples: int) -> tuple[float, float]:
    """CPU µs per new sample: (stateful step, naive resend of history + 1 samples)."""
    dataplane = components.dataplane
    x = np.sin(0.1 * np.arange(history + samples, dtype=np.float32)).reshape(-1, 1, 1)
    await dataplane.sequence_step(SequenceStep("lstm", None, "bench", True, False, x[:history].copy()))
    started = time.process_time()
    for t in range(history, history + samples):
        await dataplane.sequence_step(SequenceStep("lstm", None, "bench", False, False, x[t : t + 1].copy()))
    stateful = (time.process_time() - started) / samples * 1e6
    await dataplane.end_sequence("lstm", "bench")
    served = await dataplane.model_for("lstm", None)
    started = time.process_time()
    for t in range(history, history + samples):
        await dataplane.infer(served, np.ascontiguousarray(x[: t + 1]))
    naive = (time.process_time() - started) / samples * 1e6
    return stateful, naive


async def many(components: Components, sequences: int, rounds: int) -> tuple[float, float]:
    """(CPU µs per step, wall ms per round) of `sequences` live sequences stepping one sample each, all at once."""
    dataplane = components.dataplane
    await asyncio.gather(
        *(dataplane.sequence_step(SequenceStep("lstm", None, i + 1, True, False, one(0.0))) for i in range(sequences))
    )
    cpu = time.process_time()
    wall = time.perf_counter()
    for r in range(rounds):
        sample = float(np.sin(0.1 * r))
        await asyncio.gather(
            *(
                dataplane.sequence_step(SequenceStep("lstm", None, i + 1, False, False, one(sample)))
                for i in range(sequences)
            )
        )
    cpu_us = (time.process_time() - cpu) / (rounds * sequences) * 1e6
    wall_ms = (time.perf_counter() - wall) / rounds * 1e3
    for i in range(sequences):
        await dataplane.end_sequence("lstm", i + 1)
    return cpu_us, wall_ms


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp) / "store")
        for batching in (True, False):
            settings = Settings(store_dir=store.root, sequence_batching=batching, max_sequences=args.sequences + 1)
            components = await Components.open(settings)
            await components.poller.refresh()
            try:
                if batching:
                    for history in (100, 1000):
                        stateful, naive = await per_sample(components, history, args.samples)
                        print(
                            f"history {history:5d}: stateful {stateful:8.1f} µs CPU/sample, naive resend "
                            f"{naive:8.1f} µs CPU/sample, ratio {naive / stateful:6.1f}x"
                        )
                cpu_us, wall_ms = await many(components, args.sequences, args.rounds)
                print(
                    f"{args.sequences} live sequences, batching {'on ' if batching else 'off'}: "
                    f"{cpu_us:7.1f} µs CPU/step, {wall_ms:7.1f} ms/round"
                )
            finally:
                await components.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=1000, help="live sequences stepping at once")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of one step per sequence")
    parser.add_argument("--samples", type=int, default=200, help="new samples per history length")
    torch.set_num_threads(1)
    asyncio.run(main(parser.parse_args()))
