"""ONNX files of a version: export, parity with TorchScript at many shapes, the manifest entry, checksums."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import model_store
from model_store import onnx_runtime
from tests.conftest import save_tiny, tiny_module
from training.export import (
    ONNX_PARITY_TOLERANCE,
    check_forward,
    config_of,
    eager_of,
    export_version,
    onnx_files,
)
from training.model import STATE_METHOD

HIDDEN, LAYERS = 8, 2


@pytest.fixture(scope="module")
def exported() -> tuple[model_store.ScriptModule, onnx_runtime.OnnxSession, onnx_runtime.OnnxSession]:
    """A two-layer stateful tiny model scripted, and its two ONNX files loaded in ONNX Runtime."""
    module = tiny_module(seed=3, hidden_size=HIDDEN, stateful=True, num_layers=LAYERS)
    eager, config = eager_of(module)
    entry, files = onnx_files(eager, config, seed=3, references=(module,))
    assert entry.error is None, entry.error
    forward = onnx_runtime.load(files[onnx_runtime.FORWARD_FILE])
    state = onnx_runtime.load(files[onnx_runtime.STATE_FILE], expected_inputs=onnx_runtime.STATE_INPUTS)
    return module, forward, state


def test_export_writes_the_native_lstm_op_and_records_both_files(store: model_store.ModelStore) -> None:
    manifest = save_tiny(store, stateful=True, onnx=True)
    assert manifest.onnx is not None and manifest.onnx.error is None
    assert {manifest.onnx.file, manifest.onnx.state_file} == {"model.onnx", "model_state.onnx"}
    assert {"model.onnx", "model_state.onnx"} <= set(manifest.files)
    for filename, digest in manifest.onnx.checksums().items():
        data = store.read_version_file("lstm", manifest.version, filename)
        assert model_store.sha256_hex(data) == digest
        assert "LSTM" in onnx_runtime.operators(data)
        assert "Loop" not in onnx_runtime.operators(data)  # not unrolled or looped: the native op
    assert manifest.onnx.parity_max_abs_diff is not None and manifest.onnx.parity_max_abs_diff <= ONNX_PARITY_TOLERANCE
    assert store.manifest("lstm", manifest.version) == manifest


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 300), batch=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_onnx_forward_matches_torchscript_at_any_shape(
    exported: tuple[model_store.ScriptModule, onnx_runtime.OnnxSession, onnx_runtime.OnnxSession],
    seq: int,
    batch: int,
    seed: int,
) -> None:
    module, forward, _ = exported
    x = torch.randn(seq, batch, 1, generator=torch.Generator().manual_seed(seed))  # (seq, batch, 1)
    (y,) = forward.run(x.numpy())
    with torch.inference_mode():
        expected = module(x).numpy()
    assert y.shape == (seq, batch, 1) and y.dtype == np.float32
    assert float(np.abs(y - expected).max()) <= ONNX_PARITY_TOLERANCE


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 200), batch=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_onnx_state_carrying_file_matches_forward_state(
    exported: tuple[model_store.ScriptModule, onnx_runtime.OnnxSession, onnx_runtime.OnnxSession],
    seq: int,
    batch: int,
    seed: int,
) -> None:
    module, _, state = exported
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(seq, batch, 1, generator=generator)  # (seq, batch, 1)
    h = torch.randn(LAYERS, batch, HIDDEN, generator=generator)  # (layers, batch, hidden)
    c = torch.randn(LAYERS, batch, HIDDEN, generator=generator)
    got = state.run(x.numpy(), h.numpy(), c.numpy())
    with torch.inference_mode():
        expected = getattr(module, STATE_METHOD)(x, h, c)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.shape == tuple(theirs.shape)
        assert float(np.abs(mine - theirs.numpy()).max()) <= ONNX_PARITY_TOLERANCE


def test_chained_onnx_chunks_equal_the_one_shot_onnx_forward(
    exported: tuple[model_store.ScriptModule, onnx_runtime.OnnxSession, onnx_runtime.OnnxSession],
) -> None:
    _, forward, state = exported
    x = np.random.default_rng(0).standard_normal((60, 3, 1)).astype(np.float32)  # (seq, batch, 1)
    h = np.zeros((LAYERS, 3, HIDDEN), np.float32)
    c = np.zeros_like(h)
    outputs = []
    for start, stop in ((0, 1), (1, 17), (17, 60)):
        y, h, c = state.run(x[start:stop], h, c)
        outputs.append(y)
    assert float(np.abs(np.concatenate(outputs) - forward.run(x)[0]).max()) <= ONNX_PARITY_TOLERANCE


def test_a_parity_check_fails_against_other_weights() -> None:
    module = tiny_module(seed=1)
    other = tiny_module(seed=2)
    eager, config = eager_of(module)
    data = onnx_runtime.export_forward(eager, config.input_size)
    assert check_forward(data, module, 1, seed=0) <= ONNX_PARITY_TOLERANCE
    with pytest.raises(RuntimeError, match="differs from the model"):
        check_forward(data, other, 1, seed=0)


def test_a_failed_export_is_recorded_not_fatal(store: model_store.ModelStore) -> None:
    module = tiny_module(seed=1)
    eager, config = eager_of(module)
    entry, files = onnx_files(eager, config, seed=1, references=(tiny_module(seed=2),))  # a reference that differs
    assert files == {} and entry.file is None and entry.error is not None
    assert "differs from the model" in entry.error
    manifest = store.save(
        "lstm",
        module,
        inputs=(model_store.sequence_spec("input", 1),),
        outputs=(model_store.sequence_spec("output", 1),),
        onnx=entry,
    )
    assert store.manifest("lstm", manifest.version).onnx == entry
    assert "model.onnx" not in manifest.files


def test_save_refuses_an_onnx_entry_whose_files_do_not_match(store: model_store.ModelStore) -> None:
    module = tiny_module(seed=1)
    eager, config = eager_of(module)
    entry, files = onnx_files(eager, config, seed=1)
    specs = {"inputs": (model_store.sequence_spec("input", 1),), "outputs": (model_store.sequence_spec("output", 1),)}
    with pytest.raises(ValueError, match="not among the files"):
        store.save("lstm", module, onnx=entry, **specs)  # type: ignore[arg-type]
    tampered = {**files, "model.onnx": files["model.onnx"] + b"\0"}
    with pytest.raises(ValueError, match="sha256"):
        store.save("lstm", module, onnx=entry, extra_files=tampered, **specs)  # type: ignore[arg-type]
    assert store.versions("lstm") == []


def test_read_checked_refuses_a_corrupt_onnx_file(store: model_store.ModelStore) -> None:
    manifest = save_tiny(store, onnx=True)
    assert manifest.onnx is not None and manifest.onnx.sha256 is not None
    path = store.version_file("lstm", manifest.version, "model.onnx")
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(model_store.IntegrityError, match="does not match the manifest"):
        store.read_checked("lstm", manifest.version, "model.onnx", manifest.onnx.sha256)


def test_a_manifest_written_before_onnx_still_loads(store: model_store.ModelStore, tmp_path: Path) -> None:
    manifest = save_tiny(store)
    path = store.version_file("lstm", manifest.version, "manifest.json")
    raw = json.loads(path.read_text())
    del raw["onnx"]  # what versions published before ONNX files hold
    path.write_text(json.dumps(raw))
    assert store.manifest("lstm", manifest.version).onnx is None
    assert store.load("lstm").manifest.sha256 == manifest.sha256


def test_export_version_adds_onnx_files_and_keeps_the_checkpoint(store: model_store.ModelStore) -> None:
    old = save_tiny(store, seed=4, hidden_size=6, num_layers=2)  # exported before forward_state and ONNX
    checkpoint = store.read_version_file("lstm", old.version, "model.pt")
    updated = export_version(store, "lstm", old.version)
    assert updated.onnx is not None and updated.onnx.error is None
    assert store.read_version_file("lstm", old.version, "model.pt") == checkpoint
    assert updated.sha256 == old.sha256 and updated.created_at == old.created_at
    assert store.manifest("lstm", old.version) == updated
    module = store.load("lstm", old.version).module
    assert config_of(module).hidden_size == 6 and config_of(module).num_layers == 2
    x = np.random.default_rng(1).standard_normal((33, 4, 1)).astype(np.float32)
    session = onnx_runtime.load(store.read_checked("lstm", old.version, "model.onnx", updated.onnx.sha256 or ""))
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    assert float(np.abs(session.run(x)[0] - expected).max()) <= ONNX_PARITY_TOLERANCE
    again = export_version(store, "lstm", old.version)  # idempotent: the same files, the same manifest entry
    assert again.onnx == updated.onnx and again.files == updated.files


def test_add_onnx_refuses_when_the_checkpoint_changed(store: model_store.ModelStore) -> None:
    manifest = save_tiny(store)
    eager, config = eager_of(store.load("lstm").module)
    entry, files = onnx_files(eager, config, seed=0)
    with pytest.raises(model_store.IntegrityError, match="not the"):
        store.add_onnx("lstm", manifest.version, entry, files, checkpoint="0" * 64)
    assert store.manifest("lstm", manifest.version).onnx is None


def test_a_failed_re_export_keeps_the_earlier_onnx_files(
    store: model_store.ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = save_tiny(store, onnx=True)

    def refuse(module: torch.nn.Module, input_size: int) -> bytes:
        raise RuntimeError("exporter unavailable")

    monkeypatch.setattr(onnx_runtime, "export_forward", refuse)  # the exporter failing, as a newer torch might
    with pytest.raises(RuntimeError, match="keeps its earlier ONNX files"):
        export_version(store, "lstm", manifest.version)
    assert store.manifest("lstm", manifest.version) == manifest
    fresh = save_tiny(store, seed=1)  # no ONNX files yet: the failure is recorded instead
    recorded = export_version(store, "lstm", fresh.version)
    assert recorded.onnx is not None and recorded.onnx.file is None
    assert recorded.onnx.error is not None and "exporter unavailable" in recorded.onnx.error
