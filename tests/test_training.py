"""The trainer: tutorial reproduction, robust learning, export parity, determinism, promotion."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import model_store
from training import LSTMRegressor, ModelConfig, ParamError, TrainingError, check_parity, preset, run
from training.data import Dataset, DatasetError, load_dataset, random_sines, split_dataset, tutorial_data
from training.evaluate import WARMUP, evaluate, masked_mse

TINY = {
    "hidden_size": 6,
    "num_layers": 1,
    "max_epochs": 40,
    "batch_size": 16,
    "seq_len": 24,
    "short_batch_size": 16,
    "short_seq_len": 8,
}


def test_model_is_time_major_and_works_for_any_seq_and_batch() -> None:
    model = LSTMRegressor(ModelConfig(hidden_size=5, num_layers=2))
    for seq, batch in [(1, 1), (3, 7), (50, 2)]:
        assert model(torch.zeros(seq, batch, 1)).shape == (seq, batch, 1)


def test_model_is_causal_so_right_padding_changes_nothing() -> None:
    torch.manual_seed(0)
    model = LSTMRegressor(ModelConfig(hidden_size=5, num_layers=2)).eval()
    x = torch.randn(10, 2, 1)
    padded = torch.cat([x, torch.randn(6, 2, 1)])
    assert torch.allclose(model(x), model(padded)[:10], atol=1e-6)


def test_tutorial_data_has_the_tutorial_shapes() -> None:
    data = tutorial_data()
    assert data.train_x.shape == data.test_x.shape == (20, 5, 1)
    assert data.t[0] == 0 and math.isclose(data.t[-1], 12 * math.pi)
    assert torch.allclose(data.train_x**2 + data.train_y**2, torch.ones(20, 5, 1), atol=1e-6)


def test_random_sines_are_seeded_and_within_ranges() -> None:
    x1, y1 = random_sines(64, 30, 0.05, 1.0, torch.Generator().manual_seed(3))
    x2, _ = random_sines(64, 30, 0.05, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(x1, x2)
    assert x1.shape == y1.shape == (30, 64, 1)
    # The step of each column, recovered from its angle, lies in the requested range.
    angles = torch.atan2(x1[:, :, 0].double(), y1[:, :, 0].double())
    steps = torch.remainder(angles[1] - angles[0], 2 * math.pi)
    assert float(steps.min()) >= 0.05 - 1e-5 and float(steps.max()) <= 1.0 + 1e-5


def test_masked_mse_ignores_warmup_samples() -> None:
    target = torch.zeros(10, 1, 1)
    prediction = torch.zeros(10, 1, 1)
    prediction[:WARMUP] = 100.0
    assert masked_mse(prediction, target) == 0.0


def test_tutorial_preset_converges_and_meets_its_target(store: model_store.ModelStore) -> None:
    result = run(preset("tutorial"), store)
    assert result.final_loss < 1e-4
    assert result.epochs < 10_000
    assert result.manifest.metrics["tutorial_test_mse"] <= 5e-4


def test_short_robust_run_lowers_the_loss(store: model_store.ModelStore) -> None:
    config = preset("robust").with_overrides(TINY | {"max_epochs": 150, "hidden_size": 12})
    result = run(config, store)
    first = sum(result.losses[:10]) / 10
    last = sum(result.losses[-10:]) / 10
    assert last < 0.5 * first
    assert result.manifest.metrics["worst_mse"] < 1.0


def test_scripted_export_matches_eager() -> None:
    torch.manual_seed(1)
    model = LSTMRegressor(ModelConfig(hidden_size=8, num_layers=2)).eval()
    assert check_parity(model, model_store.script(model), 1, seed=0) <= 1e-6


def test_parity_check_rejects_a_different_module() -> None:
    torch.manual_seed(1)
    model = LSTMRegressor(ModelConfig(hidden_size=8)).eval()
    other = model_store.script(LSTMRegressor(ModelConfig(hidden_size=8)))
    with pytest.raises(TrainingError, match="differs"):
        check_parity(model, other, 1, seed=0)


def test_same_seed_gives_the_same_model(store: model_store.ModelStore) -> None:
    config = preset("robust").with_overrides(TINY | {"seed": 7})
    first = run(config, store)
    second = run(config, store)
    assert first.losses == second.losses
    a, b = store.load("lstm", 1).module, store.load("lstm", 2).module
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    assert store.manifest("lstm", 1).metrics["worst_mse"] == store.manifest("lstm", 2).metrics["worst_mse"]


def test_evaluation_goes_into_the_manifest(store: model_store.ModelStore) -> None:
    result = run(preset("robust").with_overrides(TINY), store)
    metrics = result.manifest.metrics
    assert set(metrics["mse_by_step"]) == {"0.05", "0.075", "0.1", "0.15", "0.2", "0.3", "0.5", "0.7", "0.85", "1"}
    assert metrics["worst_mse"] == max(v for row in metrics["mse_by_step"].values() for v in row.values())
    assert metrics["suite"]["warmup_ignored"] == WARMUP
    assert result.manifest.files == (
        "model.pt",
        "manifest.json",
        "model.onnx",
        "model.pt2",
        "model_state.onnx",
        "model_state.pt2",
        "report.png",
    )
    assert result.manifest.onnx is not None and result.manifest.onnx.error is None
    assert result.manifest.pt2 is not None and result.manifest.pt2.error is None
    assert store.version_file("lstm", 1, "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_is_the_same_for_eager_and_scripted() -> None:
    torch.manual_seed(2)
    model = LSTMRegressor(ModelConfig(hidden_size=4)).eval()
    assert evaluate(model)["worst_mse"] == pytest.approx(evaluate(model_store.script(model))["worst_mse"], rel=1e-5)


def linear_dataset() -> Dataset:
    x = np.sin(0.3 * np.arange(40)[:, None] + np.linspace(0, 6, 10)[None, :])[..., None]  # (40, 10, 1)
    return split_dataset(x.astype(np.float32), (0.5 * x).astype(np.float32))


def test_if_better_promotes_a_better_model_and_refuses_a_worse_one(store: model_store.ModelStore) -> None:
    dataset = linear_dataset()
    weak = preset("tutorial").with_overrides({"max_epochs": 1, "target_loss": 0.0})
    strong = preset("tutorial").with_overrides({"max_epochs": 300, "target_loss": 0.0})
    run(weak, store, promote="always", dataset=dataset)
    better = run(strong, store, promote="if_better", dataset=dataset)
    assert better.promoted
    assert (
        "dataset_test_mse" in better.promotion_reason and "not worse than serving version 1" in better.promotion_reason
    )
    assert store.resolve("lstm") == 2
    worse = run(weak, store, promote="if_better", dataset=dataset)
    assert not worse.promoted
    assert "is worse than serving version 2" in worse.promotion_reason
    assert store.resolve("lstm") == 2


def test_dataset_run_records_its_data_and_held_out_metric(store: model_store.ModelStore) -> None:
    dataset = linear_dataset()
    result = run(preset("tutorial").with_overrides({"max_epochs": 50}), store, dataset=dataset)
    data = result.manifest.data
    assert data["kind"] == "user_dataset" and data["shape"] == [40, 10, 1] and len(data["sha256"]) == 64
    assert data["train_shape"] == [40, 8, 1] and data["test_shape"] == [40, 2, 1]
    assert result.manifest.metrics["dataset_test_mse"] >= 0


def test_single_sequence_dataset_is_split_in_time() -> None:
    x = np.zeros((10, 1, 1), dtype=np.float32)
    dataset = split_dataset(x, x)
    assert dataset.train_x.shape == (5, 1, 1) and dataset.test_x.shape == (5, 1, 1)


@pytest.mark.parametrize(
    ("inputs", "targets"),
    [
        (np.zeros((5, 2, 1)), np.zeros((5, 3, 1))),
        (np.zeros((5, 2, 2)), np.zeros((5, 2, 2))),
        (np.zeros((5, 2)), np.zeros((5, 2))),
        (np.full((5, 2, 1), np.nan), np.zeros((5, 2, 1))),
        (np.zeros((1, 2, 1)), np.zeros((1, 2, 1))),
    ],
)
def test_bad_datasets_are_refused(inputs: np.ndarray, targets: np.ndarray) -> None:
    with pytest.raises(DatasetError):
        split_dataset(inputs, targets)


def test_dataset_file_round_trip_refuses_pickles(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    x = np.zeros((6, 2, 1), dtype=np.float32)
    np.savez(good, inputs=x, targets=x)
    assert load_dataset(good).shape == (6, 2, 1)
    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.array([{"a": 1}], dtype=object), targets=x)
    with pytest.raises(DatasetError):
        load_dataset(bad)


def test_first_model_is_promoted_when_nothing_serves(store: model_store.ModelStore) -> None:
    result = run(preset("robust").with_overrides(TINY), store, promote="if_better")
    assert result.promoted and result.promotion_reason == "no serving version yet"
    assert store.aliases("lstm") == {"production": 1}


def test_out_of_bounds_parameters_name_the_bound() -> None:
    with pytest.raises(ParamError, match="hidden_size from 1 to 512"):
        preset("robust").with_overrides({"hidden_size": 0})
    with pytest.raises(ParamError, match="unknown hyper-parameter"):
        preset("robust").with_overrides({"dropout": 0.1})
    with pytest.raises(ParamError, match="integer"):
        preset("robust").with_overrides({"num_layers": 1.5})
    with pytest.raises(ParamError, match="step_min"):
        preset("robust").with_overrides({"step_min": 2.0})


def test_divergence_is_an_error_and_registers_nothing(store: model_store.ModelStore) -> None:
    config = preset("robust").with_overrides(TINY | {"lr": 1.0, "grad_clip": 0.0, "max_epochs": 300})
    try:
        run(config, store)
    except TrainingError as exc:
        assert "diverged" in str(exc)
        assert store.versions("lstm") == []
    else:  # a run that happens not to diverge must still have registered a whole version
        assert store.versions("lstm") == [1]
