"""Training data: the tutorial's 200-point dataset and a seeded generator of random sine sequences."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class Dataset:
    """A user's own sequences, split into a training part and a held-out part for its metrics."""

    train_x: torch.Tensor  # (seq, n_train, 1)
    train_y: torch.Tensor  # (seq, n_train, 1)
    test_x: torch.Tensor  # (seq_test, n_test, 1)
    test_y: torch.Tensor  # (seq_test, n_test, 1)
    sha256: str  # of the float32 bytes of inputs then targets: independent of the file container
    shape: tuple[int, int, int]
    split: str

    def describe(self) -> dict[str, object]:
        return {
            "kind": "user_dataset",
            "sha256": self.sha256,
            "shape": list(self.shape),
            "split": self.split,
            "train_shape": list(self.train_x.shape),
            "test_shape": list(self.test_x.shape),
        }


class DatasetError(ValueError):
    """A dataset file that is not two finite float arrays of the same (seq, batch, 1) shape."""


def split_dataset(inputs: np.ndarray, targets: np.ndarray) -> Dataset:
    """Hold out the last fifth of the sequences (at least one); a single sequence is split in time."""
    if inputs.ndim != 3 or inputs.shape != targets.shape or inputs.shape[2] != 1:
        raise DatasetError(
            f"inputs {list(inputs.shape)} and targets {list(targets.shape)} must both be shaped (seq, batch, 1)"
        )
    seq, batch, _ = inputs.shape
    if seq < 2 or not (np.isfinite(inputs).all() and np.isfinite(targets).all()):
        raise DatasetError("a dataset needs at least 2 time steps and finite values only")
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()
    if batch >= 2:
        held = max(1, batch // 5)
        parts = (x[:, :-held], y[:, :-held], x[:, -held:], y[:, -held:])
        split = f"last {held} of {batch} sequences held out"
    else:
        half = seq // 2
        parts = (x[:half], y[:half], x[half:], y[half:])
        split = f"one sequence: first {half} steps train, last {seq - half} held out"
    return Dataset(*parts, sha256=digest, shape=(seq, batch, 1), split=split)


def load_dataset(path: str | Path) -> Dataset:
    """Read an .npz with float arrays `inputs` and `targets` (no pickles) and split it."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            inputs, targets = archive["inputs"], archive["targets"]
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc}; expected an .npz with 'inputs' and 'targets'") from exc
    if inputs.dtype.kind != "f" or targets.dtype.kind != "f":
        raise DatasetError(f"dataset arrays must be floating point, got {inputs.dtype} and {targets.dtype}")
    return split_dataset(inputs, targets)
