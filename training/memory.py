"""The peak memory of a training run, estimated from its hyper-parameters before it starts (no torch here).

The service refuses a job whose estimate is over its budget before queueing it, and lstm-train refuses
to start one; the constants are calibrated against the peak RSS of real lstm-train runs
(`benchmarks/train_memory.py`, numbers in docs/training.md). The estimate is an upper bound with a
safety factor, not a prediction: what it leaves out (the incumbent model scored by `--promote
if_better`, allocator slack) the factor and the training process's memory limit cover.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.config import TrainConfig

MIB = 1 << 20
FLOAT_BYTES = 4
DEFAULT_BUDGET_MB = 5120  # every preset, and the largest model (512 x 4) at the preset's batches (docs/training.md)
# Measured (benchmarks/train_memory.py): a process that has imported torch and the trainer.
BASE_MIB = 260.0
# Forward + backward of the LSTM keep this much per (time step x sequence x layer x hidden unit): gates,
# cell and hidden states and their gradients, about 10 floats.
TRAIN_BYTES_PER_UNIT = 40.0
# Autograd and allocator overhead of a step, independent of the sizes; the allocator keeps about as much
# after training, under the evaluation that follows.
TRAIN_FIXED_MIB = 100.0
# The held-out suite runs one (1500, 320, 1) forward: its (1500, 320, hidden) float outputs, one per
# layer still alive plus the input of the next (measured: 2 for one layer, 3 from two layers on).
SUITE_STEPS, SUITE_SEQUENCES = 1500, 320
TUTORIAL_STEPS, TUTORIAL_SEQUENCES = 20, 5
SAFETY = 1.25


@dataclass(frozen=True)
class MemoryEstimate:
    """A training run's estimated peak resident memory, and its parts (MiB, before the safety factor)."""

    base: float
    weights: float
    training: float
    evaluation: float

    @property
    def peak_mib(self) -> float:
        return SAFETY * (self.base + self.weights + max(self.training, self.evaluation))

    def describe(self) -> str:
        step = "training steps" if self.training >= self.evaluation else "the held-out evaluation"
        return f"about {self.peak_mib:,.0f} MiB at peak (dominated by {step})"


class MemoryBudgetError(ValueError):
    """A run whose estimated peak memory is over the budget; the message names both."""


def _parameters(config: TrainConfig) -> int:
    hidden = config.hidden_size
    lstm = sum(4 * hidden * ((1 if layer == 0 else hidden) + hidden + 2) for layer in range(config.num_layers))
    return lstm + hidden + 1  # the linear head


def step_units(config: TrainConfig, dataset_shape: tuple[int, ...] | None = None) -> int:
    """Time steps x sequences that one training step runs forward and backward."""
    if dataset_shape is not None:
        return int(dataset_shape[0]) * int(dataset_shape[1])  # full batch; the held-out fifth is an upper bound
    if config.preset == "tutorial":
        return TUTORIAL_STEPS * TUTORIAL_SEQUENCES
    units = config.batch_size * config.seq_len
    if config.short_batch_size and config.short_weight:
        units += config.short_batch_size * config.short_seq_len
    return units


def estimate(config: TrainConfig, dataset_shape: tuple[int, ...] | None = None) -> MemoryEstimate:
    """The estimated peak memory of training `config` (on a dataset of `dataset_shape` (seq, batch, 1) if given)."""
    hidden, layers = config.hidden_size, config.num_layers
    weights = 4 * _parameters(config) * FLOAT_BYTES / MIB  # weights, gradients and Adam's two moments
    units = step_units(config, dataset_shape) * layers * hidden
    training = TRAIN_FIXED_MIB + units * TRAIN_BYTES_PER_UNIT / MIB
    live = 1 + min(layers, 2)
    evaluation = TRAIN_FIXED_MIB + live * SUITE_STEPS * SUITE_SEQUENCES * hidden * FLOAT_BYTES / MIB
    return MemoryEstimate(base=BASE_MIB, weights=weights, training=training, evaluation=evaluation)


def check_budget(config: TrainConfig, budget_mb: float, dataset_shape: tuple[int, ...] | None = None) -> float:
    """The estimated peak in MiB; MemoryBudgetError if it is over `budget_mb` (0: no budget)."""
    found = estimate(config, dataset_shape)
    if budget_mb and found.peak_mib > budget_mb:
        raise MemoryBudgetError(
            f"this training run needs {found.describe()}, over the memory budget of {budget_mb:g} MiB; "
            "lower hidden_size, num_layers, batch_size, seq_len, short_batch_size or the dataset's size"
        )
    return found.peak_mib
