"""Training data: the tutorial's 200-point dataset and a seeded generator of random sine sequences."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

TUTORIAL_POINTS = 200
TUTORIAL_SPAN = 12 * math.pi
TUTORIAL_TRAIN_FRACTION = 0.5
TUTORIAL_GROUP = 5  # the tutorial's reshape(-1, 5, 1): each column is a stride-5 subsample


@dataclass(frozen=True)
class TutorialData:
    """The tutorial's split, as tensors shaped like its reshape(-1, 5, 1), plus the flat series."""

    t: np.ndarray  # (200,) time points on [0, 12π]
    train_x: torch.Tensor  # (20, 5, 1) sin, first half
    train_y: torch.Tensor  # (20, 5, 1) cos, first half
    test_x: torch.Tensor  # (20, 5, 1) sin, second half
    test_y: torch.Tensor  # (20, 5, 1) cos, second half

    @property
    def split(self) -> int:
        return int(TUTORIAL_POINTS * TUTORIAL_TRAIN_FRACTION)


def tutorial_data() -> TutorialData:
    """200 points of sin/cos on [0, 12π]; first half trains, second half tests."""
    t = np.linspace(0, TUTORIAL_SPAN, TUTORIAL_POINTS)
    sin = np.sin(t).astype(np.float32)
    cos = np.cos(t).astype(np.float32)
    half = int(TUTORIAL_POINTS * TUTORIAL_TRAIN_FRACTION)

    def grouped(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values.reshape(-1, TUTORIAL_GROUP, 1).copy())  # (seq, 5, 1)

    return TutorialData(
        t=t,
        train_x=grouped(sin[:half]),
        train_y=grouped(cos[:half]),
        test_x=grouped(sin[half:]),
        test_y=grouped(cos[half:]),
    )


def ungroup(tensor: torch.Tensor) -> np.ndarray:
    """Undo the tutorial's reshape: (seq, 5, 1) back to the flat series it came from."""
    return tensor.detach().reshape(-1).numpy()


def sine_batch(steps: torch.Tensor, phases: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos of phase + step·k for k < length, one column per (step, phase) pair.

    steps, phases: (batch,). Returns x = sin, y = cos, each (length, batch, 1) float32.
    The angle is built in float64 so long sequences keep their precision.
    """
    k = torch.arange(length, dtype=torch.float64)[:, None]  # (length, 1)
    angle = phases.double()[None, :] + steps.double()[None, :] * k  # (length, batch)
    return torch.sin(angle).float()[..., None], torch.cos(angle).float()[..., None]


def random_sines(
    batch: int, length: int, step_min: float, step_max: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random sines: step log-uniform in [step_min, step_max], phase uniform in [0, 2π).

    Log-uniform steps give slow sines (the hard case: they change little per sample) as much
    weight as fast ones. Returns x, y shaped (length, batch, 1).
    """
    low, high = math.log(step_min), math.log(step_max)
    steps = torch.exp(low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64))
    phases = 2 * math.pi * torch.rand(batch, generator=generator, dtype=torch.float64)
    return sine_batch(steps, phases, length)
