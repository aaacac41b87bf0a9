"""Shared fixtures: a store in tmp_path holding tiny real TorchScript models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import model_store
from training import LSTMRegressor, ModelConfig

SaveTiny = Callable[..., model_store.Manifest]


def tiny_module(seed: int = 0, hidden_size: int = 4) -> model_store.ScriptModule:
    """A real (untrained) LSTMRegressor, scripted; `seed` makes its weights distinct."""
    torch.manual_seed(seed)
    return model_store.script(LSTMRegressor(ModelConfig(hidden_size=hidden_size, num_layers=1)))


def save_tiny(
    store: model_store.ModelStore, name: str = "lstm", seed: int = 0, **kwargs: object
) -> model_store.Manifest:
    return store.save(
        name,
        tiny_module(seed),
        inputs=(model_store.sequence_spec("input", 1),),
        outputs=(model_store.sequence_spec("output", 1),),
        params={"seed": seed},
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(tmp_path: Path) -> model_store.ModelStore:
    return model_store.ModelStore(tmp_path / "store")
