"""The held-out suite every trained model is scored on; its numbers go into the manifest.

Sines at fixed sampling steps across the served range, at several lengths, at phases drawn
once from a fixed seed, plus the tutorial's own test split. Errors ignore the first WARMUP
samples of each sequence: from one sample the model cannot tell the sign of cos (sin(θ) = 0.5
for θ = π/6 and 5π/6, whose cosines differ in sign), and a couple more are needed before the
direction and speed of the sine are known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from training.data import sine_batch, tutorial_data

WARMUP = 3
SUITE_STEPS: tuple[float, ...] = (0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0)
SUITE_LENGTHS: tuple[int, ...] = (12, 100, 1500)
SUITE_PHASES = 32
SUITE_SEED = 20_261_128

Model = Callable[[torch.Tensor], torch.Tensor]


def suite_phases() -> torch.Tensor:
    """The suite's phases: fixed by SUITE_SEED, so every model is scored on the same sines."""
    rng = np.random.default_rng(SUITE_SEED)
    return torch.from_numpy(rng.uniform(0.0, 2 * np.pi, SUITE_PHASES))


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, warmup: int = WARMUP) -> float:
    """MSE over (seq, batch, 1) tensors, skipping the first `warmup` steps of every sequence."""
    return float(((prediction[warmup:] - target[warmup:]) ** 2).mean())


@torch.inference_mode()
def evaluate(model: Model) -> dict[str, Any]:
    """Score `model` on the suite; returns the metrics stored in the manifest."""
    phases = suite_phases()
    per_step: dict[str, dict[str, float]] = {}
    longest = max(SUITE_LENGTHS)
    steps = torch.tensor(SUITE_STEPS, dtype=torch.float64).repeat_interleave(SUITE_PHASES)
    x, y = sine_batch(steps, phases.repeat(len(SUITE_STEPS)), longest)  # (1500, steps·phases, 1)
    # The model is causal, so the first n outputs of the longest run are the outputs for length n.
    prediction = model(x)
    worst = (0.0, SUITE_STEPS[0], SUITE_LENGTHS[0])
    for i, step in enumerate(SUITE_STEPS):
        columns = slice(i * SUITE_PHASES, (i + 1) * SUITE_PHASES)
        row = {}
        for length in SUITE_LENGTHS:
            mse = masked_mse(prediction[:length, columns], y[:length, columns])
            row[str(length)] = mse
            worst = max(worst, (mse, step, length))
        per_step[f"{step:g}"] = row
    tutorial = tutorial_data()
    return {
        "worst_mse": worst[0],
        "worst_case": {"step": worst[1], "length": worst[2]},
        "mean_mse": float(np.mean([v for row in per_step.values() for v in row.values()])),
        "mse_by_step": per_step,
        "tutorial_test_mse": float(((model(tutorial.test_x) - tutorial.test_y) ** 2).mean()),
        "suite": {
            "steps": list(SUITE_STEPS),
            "lengths": list(SUITE_LENGTHS),
            "phases": SUITE_PHASES,
            "seed": SUITE_SEED,
            "warmup_ignored": WARMUP,
        },
    }
