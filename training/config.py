"""Training hyper-parameters: one dataclass, their documented bounds, and the two presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

PresetName = Literal["robust", "tutorial"]
PRESET_NAMES: tuple[PresetName, ...] = ("robust", "tutorial")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run does; with the seed, enough to reproduce it."""

    preset: PresetName = "robust"
    hidden_size: int = 32
    num_layers: int = 2
    lr: float = 1e-2
    lr_min: float = 1e-5
    max_epochs: int = 2500
    target_loss: float = 0.0
    seed: int = 0
    batch_size: int = 128
    seq_len: int = 64
    short_batch_size: int = 1024
    short_seq_len: int = 12
    short_weight: float = 4.0
    step_min: float = 0.04
    step_max: float = 1.05
    grad_clip: float = 1.0
    time_limit: float = 3600.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with `overrides` applied after checking each against its bounds."""
        check_params(overrides)
        # JSON gives 32.0 for 32: integer parameters are stored as int.
        config = replace(self, **{name: BOUNDS[name].kind(value) for name, value in overrides.items()})
        if config.step_min > config.step_max:
            raise ParamError(f"step_min={config.step_min} must not exceed step_max={config.step_max}")
        return config


@dataclass(frozen=True)
class Bound:
    """The accepted range of one hyper-parameter and what it means."""

    kind: type
    low: float
    high: float
    help: str

    def describe(self) -> str:
        """The range as text, integers without exponents."""
        if self.kind is int:
            return f"{int(self.low)} to {int(self.high)}"
        return f"{self.low:g} to {self.high:g}"


# Every hyper-parameter a user may set (flags and, later, the HTTP API), with its range.
BOUNDS: dict[str, Bound] = {
    "hidden_size": Bound(int, 1, 512, "LSTM hidden units per layer"),
    "num_layers": Bound(int, 1, 4, "stacked LSTM layers"),
    "lr": Bound(float, 1e-6, 1.0, "Adam learning rate (peak of the cosine schedule for robust)"),
    "lr_min": Bound(float, 0.0, 1.0, "floor of the cosine learning-rate schedule (robust)"),
    "max_epochs": Bound(int, 1, 100_000, "optimizer steps; the tutorial preset's full-batch epochs"),
    "target_loss": Bound(float, 0.0, 10.0, "stop as soon as the training loss is below this (0: never)"),
    "seed": Bound(int, 0, 2**31 - 1, "seeds weights and data; same seed, same model (see README)"),
    "batch_size": Bound(int, 1, 4096, "long random sequences per step (robust)"),
    "seq_len": Bound(int, 4, 2048, "length of the long sequences (robust)"),
    "short_batch_size": Bound(int, 0, 8192, "short random sequences per step (robust; 0: none)"),
    "short_seq_len": Bound(int, 4, 256, "length of the short sequences (robust)"),
    "short_weight": Bound(float, 0.0, 100.0, "weight of the short sequences' loss (robust)"),
    "step_min": Bound(float, 0.001, 3.14, "smallest sampling step of the training sines, rad"),
    "step_max": Bound(float, 0.001, 3.14, "largest sampling step of the training sines, rad"),
    "grad_clip": Bound(float, 0.0, 1000.0, "gradient-norm clip (0: off)"),
    "time_limit": Bound(float, 1.0, 86_400.0, "wall-clock limit in seconds; hitting it breaks determinism"),
}


class ParamError(ValueError):
    """A hyper-parameter that is unknown or outside its bounds; the message names the bound."""


def check_params(params: dict[str, Any]) -> None:
    """Raise ParamError unless every entry is a known hyper-parameter within its bounds."""
    known = {f.name for f in fields(TrainConfig)} - {"preset"}
    for name, value in params.items():
        if name not in known:
            raise ParamError(f"unknown hyper-parameter {name!r}; expected one of {sorted(known)}")
        bound = BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(f"{name} must be a number, got {value!r}")
        if bound.kind is int and not float(value).is_integer():
            raise ParamError(f"{name} must be an integer, got {value!r}")
        if not bound.low <= value <= bound.high:
            raise ParamError(f"{name}={value!r} is out of bounds: expected {name} from {bound.describe()}")


PRESETS: dict[PresetName, TrainConfig] = {
    # The recipe and its reasons are in docs/training.md.
    "robust": TrainConfig(),
    # The tutorial exactly: 16 hidden units, one layer, Adam 1e-2 full batch, stop below 1e-4.
    "tutorial": TrainConfig(
        preset="tutorial",
        hidden_size=16,
        num_layers=1,
        lr=1e-2,
        lr_min=1e-2,
        max_epochs=10_000,
        target_loss=1e-4,
        grad_clip=0.0,
    ),
}


def preset(name: PresetName) -> TrainConfig:
    return PRESETS[name]
