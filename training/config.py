"""Training hyper-parameters: one frozen pydantic model whose Fields carry each bound, and the two presets.

The Fields are the single source of every bound and description: `check_params` and its messages,
lstm-train's flags and their environment twins (training.settings_cli), the optional `TrainParams` that
POST /train validates, and the tables in docs/training.md are all derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

PresetName = Literal["robust", "tutorial"]
PRESET_NAMES: tuple[PresetName, ...] = ("robust", "tutorial")


class TrainConfig(BaseModel):
    """Everything that decides what a training run does; with the seed, enough to reproduce it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: PresetName = Field("robust", description="the recipe the other values start from")
    hidden_size: int = Field(32, ge=1, le=512, description="LSTM hidden units per layer")
    num_layers: int = Field(2, ge=1, le=4, description="stacked LSTM layers")
    lr: float = Field(1e-2, ge=1e-6, le=1.0, description="Adam learning rate (peak of the cosine schedule for robust)")
    lr_min: float = Field(1e-5, ge=0.0, le=1.0, description="floor of the cosine learning-rate schedule (robust)")
    max_epochs: int = Field(
        2500, ge=1, le=100_000, description="optimizer steps; the tutorial preset's full-batch epochs"
    )
    target_loss: float = Field(
        0.0, ge=0.0, le=10.0, description="stop as soon as the training loss is below this (0: never)"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds weights and data; same seed, same model (see README)")
    batch_size: int = Field(128, ge=1, le=4096, description="long random sequences per step (robust)")
    seq_len: int = Field(64, ge=4, le=2048, description="length of the long sequences (robust)")
    short_batch_size: int = Field(1024, ge=0, le=8192, description="short random sequences per step (robust; 0: none)")
    short_seq_len: int = Field(12, ge=4, le=256, description="length of the short sequences (robust)")
    short_weight: float = Field(4.0, ge=0.0, le=100.0, description="weight of the short sequences' loss (robust)")
    step_min: float = Field(0.04, ge=0.001, le=3.14, description="smallest sampling step of the training sines, rad")
    step_max: float = Field(1.05, ge=0.001, le=3.14, description="largest sampling step of the training sines, rad")
    grad_clip: float = Field(1.0, ge=0.0, le=1000.0, description="gradient-norm clip (0: off)")
    time_limit: float = Field(
        3600.0, ge=1.0, le=86_400.0, description="wall-clock limit in seconds; hitting it breaks determinism"
    )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with `overrides` applied after checking each against its bounds."""
        check_params(overrides)
        # JSON gives 32.0 for 32: integer parameters are stored as int.
        config = self.model_copy(update={name: BOUNDS[name].kind(value) for name, value in overrides.items()})
        if config.step_min > config.step_max:
            raise ParamError(f"step_min={config.step_min} must not exceed step_max={config.step_max}")
        return config


def limits(field: FieldInfo) -> tuple[Any, Any]:
    """The ge= and le= of a Field, as written."""
    low = next(m.ge for m in field.metadata if isinstance(m, annotated_types.Ge))
    high = next(m.le for m in field.metadata if isinstance(m, annotated_types.Le))
    return low, high


@dataclass(frozen=True)
class Bound:
    """The accepted range of one hyper-parameter and what it means, as its Field declares them."""

    kind: type
    low: float
    high: float
    help: str

    @classmethod
    def of(cls, field: FieldInfo) -> Bound:
        """The bound a Field declares with ge= and le=."""
        low, high = limits(field)
        kind: Any = field.annotation
        assert kind in (int, float) and field.description is not None, field
        return cls(kind, float(low), float(high), field.description)

    def describe(self) -> str:
        """The range as text, integers without exponents."""
        if self.kind is int:
            return f"{int(self.low)} to {int(self.high)}"
        return f"{self.low:g} to {self.high:g}"


# Every hyper-parameter a user may set (lstm-train's flags, POST /train's params), with its range.
BOUNDS: dict[str, Bound] = {
    name: Bound.of(field) for name, field in TrainConfig.model_fields.items() if name != "preset"
}


class ParamError(ValueError):
    """A hyper-parameter that is unknown or outside its bounds; the message names the bound."""


def check_params(params: dict[str, Any]) -> None:
    """Raise ParamError unless every entry is a known hyper-parameter within its bounds."""
    for name, value in params.items():
        if name not in BOUNDS:
            raise ParamError(f"unknown hyper-parameter {name!r}; expected one of {sorted(BOUNDS)}")
        bound = BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(f"{name} must be a number, got {value!r}")
        if bound.kind is int and not float(value).is_integer():
            raise ParamError(f"{name} must be an integer, got {value!r}")
        if not bound.low <= value <= bound.high:
            raise ParamError(f"{name}={value!r} is out of bounds: expected {name} from {bound.describe()}")


class ParamOverrides(BaseModel):
    """What TrainParams adds to its generated fields: check_params' messages, and the overrides given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _within_bounds(cls, data: Any) -> Any:
        # The same messages as lstm-train's (what the tests and clients match); not a dict: pydantic says so.
        if isinstance(data, dict):
            try:
                check_params(data)
            except ParamError as exc:
                raise PydanticCustomError("hyper_parameter", str(exc)) from None
        return data

    def given(self) -> dict[str, Any]:
        """The hyper-parameters that were set, by name."""
        return self.model_dump(exclude_unset=True)


def _optional(field: FieldInfo) -> tuple[Any, Any]:
    """`field` as an optional override: its type or None, the same bounds and description, unset by default."""
    low, high = limits(field)
    kind: Any = field.annotation
    return kind | None, Field(None, ge=low, le=high, description=field.description)


if TYPE_CHECKING:
    TrainParams = ParamOverrides  # for mypy; the class below has one optional field per hyper-parameter
else:
    TrainParams = create_model(
        "TrainParams",
        __base__=ParamOverrides,
        __doc__="Hyper-parameter overrides of a preset, each within its bounds; unset ones keep the preset's.",
        **{name: _optional(TrainConfig.model_fields[name]) for name in BOUNDS},
    )


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
