"""The offline trainer: the LSTM, its data, the training loop, evaluation, report and lstm-train."""

from training.config import BOUNDS, PRESET_NAMES, PRESETS, Bound, ParamError, PresetName, TrainConfig, preset
from training.evaluate import WARMUP, evaluate
from training.model import LSTMRegressor, ModelConfig
from training.train import PROMOTE_CHOICES, Promote, TrainingError, TrainResult, check_parity, run

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
    "TrainResult",
    "TrainingError",
    "check_parity",
    "evaluate",
    "preset",
    "run",
]
