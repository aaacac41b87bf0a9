"""The offline trainer: the LSTM, its data, the training loop, evaluation, report and lstm-train.

The hyper-parameter schema (training.config) is light and imported at once; everything that
needs torch or matplotlib loads on first use, so the service can validate a training request
without paying for the trainer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from training.config import (
    BOUNDS,
    PRESET_NAMES,
    PRESETS,
    Bound,
    ParamError,
    PresetName,
    TrainConfig,
    TrainParams,
    preset,
)

if TYPE_CHECKING:
    from training.evaluate import WARMUP, evaluate
    from training.model import LSTMRegressor, ModelConfig
    from training.train import (
        PROMOTE_CHOICES,
        Promote,
        TrainingError,
        TrainResult,
        check_parity,
        check_sequence_parity,
        run,
        sequence_support,
    )

_LAZY = {
    "WARMUP": "training.evaluate",
    "evaluate": "training.evaluate",
    "LSTMRegressor": "training.model",
    "ModelConfig": "training.model",
    "PROMOTE_CHOICES": "training.train",
    "Promote": "training.train",
    "TrainingError": "training.train",
    "TrainResult": "training.train",
    "check_parity": "training.train",
    "check_sequence_parity": "training.train",
    "run": "training.train",
    "sequence_support": "training.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")


__all__ = [
    "BOUNDS",
    "PRESETS",
    "PRESET_NAMES",
    "PROMOTE_CHOICES",
    "WARMUP",
    "Bound",
    "LSTMRegressor",
    "ModelConfig",
    "ParamError",
    "PresetName",
    "Promote",
    "TrainConfig",
    "TrainParams",
    "TrainResult",
    "TrainingError",
    "check_parity",
    "check_sequence_parity",
    "evaluate",
    "preset",
    "run",
    "sequence_support",
]
