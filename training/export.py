"""A version's ONNX and `.pt2` files: exported from the eager model, parity-checked, recorded in its manifest.

Both are optional formats: `onnx_files` and `pt2_files` never raise for a failed export or a failed parity check;
the manifest's `onnx` or `pt2` entry then says why (`error`), and the version is served by TorchScript. Each file
is checked against the eager model (and the TorchScript module) at ONNX_PARITY_SHAPES, output shapes included: an
export that kept the example's sequence length fails there. `export_version` (lstm-train export) gives a published
version both, rebuilt from its checkpoint's weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

import model_store
from model_store import onnx_runtime, pt2_export
from training.model import STATE_METHOD, LSTMRegressor, ModelConfig

ONNX_PARITY_TOLERANCE = 1e-5
# (seq, batch): seq 1, a batch other than the example's, and long sequences among them.
ONNX_PARITY_SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (1, 7), (7, 3), (20, 5), (64, 1), (500, 2), (1000, 1))
Reference = Callable[[torch.Tensor], torch.Tensor]
# What `lstm-train --no-pt2` records in the manifest's `pt2` entry.
PT2_SKIPPED = "not exported: lstm-train --no-pt2"


class ExportParityError(RuntimeError):
    """An exported file's outputs differ from the model's beyond the tolerance (or have the wrong shape), or an
    export failed where such files exist already."""


class OnnxParityError(ExportParityError):
    """ExportParityError of an ONNX file."""


def _worst(got: np.ndarray, want: torch.Tensor, what: str, kind: str = "ONNX") -> float:
    if got.shape != tuple(want.shape):
        raise ExportParityError(f"{what}: {kind} gave shape {got.shape}, the model {tuple(want.shape)}")
    return float(np.abs(got - want.numpy()).max())


def _forward_worst(
    run: Callable[[torch.Tensor], np.ndarray], references: tuple[Reference, ...], input_size: int, seed: int, kind: str
) -> float:
    """Largest |run(x) - reference(x)| of `forward` over ONNX_PARITY_SHAPES and every reference."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for seq, batch in ONNX_PARITY_SHAPES:
        x = torch.randn(seq, batch, input_size, generator=generator)  # (seq, batch, input)
        y = run(x)  # (seq, batch, output)
        for reference in references:
            worst = max(worst, _worst(y, reference(x), f"forward at {(seq, batch, input_size)}", kind))
    return worst


def _state_worst(
    run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Sequence[np.ndarray]],
    model: nn.Module,
    config: ModelConfig,
    seed: int,
    kind: str,
) -> float:
    """Largest |run - eager| of the state-carrying method (y, hn, cn) from random states over ONNX_PARITY_SHAPES."""
    step = getattr(model, STATE_METHOD)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for seq, batch in ONNX_PARITY_SHAPES:
        x = torch.randn(seq, batch, config.input_size, generator=generator)  # (seq, batch, input)
        h = torch.randn(config.num_layers, batch, config.hidden_size, generator=generator)  # (layers, batch, hidden)
        c = torch.randn(config.num_layers, batch, config.hidden_size, generator=generator)
        for name, mine, theirs in zip(onnx_runtime.STATE_OUTPUTS, run(x, h, c), step(x, h, c), strict=True):
            worst = max(worst, _worst(mine, theirs, f"{name} at {(seq, batch, config.input_size)}", kind))
    return worst


@torch.inference_mode()
def check_forward(data: bytes, reference: Reference, input_size: int, seed: int) -> float:
    """Largest |ONNX - reference| of `forward` over ONNX_PARITY_SHAPES; raises OnnxParityError above tolerance."""
    session = onnx_runtime.load(data)

    def run(x: torch.Tensor) -> np.ndarray:
        (y,) = session.run(x.numpy())  # exactly one output, (seq, batch, output)
        return y

    worst = _forward_worst(run, (reference,), input_size, seed, "ONNX")
    if not worst <= ONNX_PARITY_TOLERANCE:  # `not <=`: a NaN fails too
        raise OnnxParityError(f"ONNX forward differs from the model by {worst:.3g} > {ONNX_PARITY_TOLERANCE:g}")
    return worst


@torch.inference_mode()
def check_state(data: bytes, model: nn.Module, config: ModelConfig, seed: int) -> float:
    """Largest |ONNX - eager| of the state-carrying method from random states; raises OnnxParityError above it."""
    session = onnx_runtime.load(data, expected_inputs=onnx_runtime.STATE_INPUTS)
    worst = _state_worst(
        lambda x, h, c: session.run(x.numpy(), h.numpy(), c.numpy()), model, config, seed, "ONNX"
    )  # y (seq, batch, output), hn and cn like h
    if not worst <= ONNX_PARITY_TOLERANCE:
        raise OnnxParityError(f"ONNX {STATE_METHOD} differs from the model by {worst:.3g} > {ONNX_PARITY_TOLERANCE:g}")
    return worst


@torch.inference_mode()
def check_pt2_forward(data: bytes, references: tuple[Reference, ...], input_size: int, seed: int) -> float:
    """Largest |.pt2 - reference| of `forward` over ONNX_PARITY_SHAPES and every reference (the program as
    torch.export.load reads it back); raises ExportParityError above tolerance or for a wrong output shape."""
    program = pt2_export.load(data)
    worst = _forward_worst(lambda x: program(x).numpy(), references, input_size, seed, ".pt2")
    if not worst <= ONNX_PARITY_TOLERANCE:
        raise ExportParityError(f".pt2 forward differs from the model by {worst:.3g} > {ONNX_PARITY_TOLERANCE:g}")
    return worst


@torch.inference_mode()
def check_pt2_state(data: bytes, model: nn.Module, config: ModelConfig, seed: int) -> float:
    """Largest |.pt2 - eager| of the state-carrying method from random states; raises ExportParityError above it."""
    program = pt2_export.load(data)
    worst = _state_worst(lambda x, h, c: [t.numpy() for t in program(x, h, c)], model, config, seed, ".pt2")
    if not worst <= ONNX_PARITY_TOLERANCE:
        raise ExportParityError(
            f".pt2 {STATE_METHOD} differs from the model by {worst:.3g} > {ONNX_PARITY_TOLERANCE:g}"
        )
    return worst


def _failure(stage: str, exc: Exception) -> str:
    return f"{stage} failed: {type(exc).__name__}: {str(exc)[:300]}"


def onnx_files(
    model: LSTMRegressor, config: ModelConfig, seed: int, references: tuple[Reference, ...] = ()
) -> tuple[model_store.OnnxExport, dict[str, bytes]]:
    """The ONNX entry and files of an eager model: forward and the state-carrying method, each parity-checked
    against the eager model (and each of `references`, e.g. its TorchScript module). Never raises: what failed is
    the entry's `error`; a failed state-carrying export keeps the forward file."""
    model.eval()
    try:
        forward = onnx_runtime.export_forward(model, config.input_size)
        if "LSTM" not in onnx_runtime.operators(forward):
            raise OnnxParityError("the export holds no native ONNX LSTM op")
        candidates: tuple[Reference, ...] = (model, *references)
        parity = max(check_forward(forward, ref, config.input_size, seed) for ref in candidates)
    except Exception as exc:  # optional format: whatever the exporter or the check raises is recorded, not fatal
        return model_store.OnnxExport(
            None, None, exporter=onnx_runtime.EXPORTER, error=_failure("ONNX export", exc)
        ), {}
    files = {onnx_runtime.FORWARD_FILE: forward}
    entry = model_store.OnnxExport(
        file=onnx_runtime.FORWARD_FILE,
        sha256=model_store.sha256_hex(forward),
        parity_max_abs_diff=parity,
        exporter=onnx_runtime.EXPORTER,
    )
    try:
        state = onnx_runtime.export_state(model, STATE_METHOD, config.input_size, config.num_layers, config.hidden_size)
        parity = max(parity, check_state(state, model, config, seed))
    except Exception as exc:
        return replace(entry, error=_failure(f"ONNX export of {STATE_METHOD}", exc)), files
    files[onnx_runtime.STATE_FILE] = state
    return replace(
        entry,
        state_file=onnx_runtime.STATE_FILE,
        state_sha256=model_store.sha256_hex(state),
        parity_max_abs_diff=parity,
    ), files


def pt2_files(
    model: LSTMRegressor, config: ModelConfig, seed: int, references: tuple[Reference, ...] = ()
) -> tuple[model_store.Pt2Export, dict[str, bytes]]:
    """The `.pt2` entry and files of an eager model: forward and the state-carrying method as torch.export
    ExportedPrograms, each parity-checked against the eager model (and each of `references`). Never raises: what
    failed is the entry's `error`; a failed state-carrying export keeps the forward file."""
    model.eval()
    exporter = pt2_export.EXPORTER
    try:
        forward = pt2_export.export_forward(model, config.input_size)
        parity = check_pt2_forward(forward, (model, *references), config.input_size, seed)
    except Exception as exc:  # optional format: whatever torch.export or the check raises is recorded, not fatal
        return model_store.Pt2Export(None, None, exporter=exporter, error=_failure(".pt2 export", exc)), {}
    files = {pt2_export.FORWARD_FILE: forward}
    entry = model_store.Pt2Export(
        file=pt2_export.FORWARD_FILE,
        sha256=model_store.sha256_hex(forward),
        parity_max_abs_diff=parity,
        exporter=exporter,
    )
    try:
        state = pt2_export.export_state(model, STATE_METHOD, config.input_size, config.num_layers, config.hidden_size)
        parity = max(parity, check_pt2_state(state, model, config, seed))
    except Exception as exc:
        return replace(entry, error=_failure(f".pt2 export of {STATE_METHOD}", exc)), files
    files[pt2_export.STATE_FILE] = state
    return replace(
        entry, state_file=pt2_export.STATE_FILE, state_sha256=model_store.sha256_hex(state), parity_max_abs_diff=parity
    ), files


def skipped_pt2() -> model_store.Pt2Export:
    """The `.pt2` entry of a version trained with --no-pt2: no files, and why."""
    return model_store.Pt2Export(None, None, exporter=pt2_export.EXPORTER, error=PT2_SKIPPED)


def config_of(module: model_store.ScriptModule) -> ModelConfig:
    """The ModelConfig of a scripted LSTMRegressor (or of a version exported before forward_state), read from its
    weights' shapes: lstm.weight_ih_l{k} is (4 * hidden, input or hidden), head.weight (output, hidden)."""
    weights = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    layers = sum(1 for key in weights if key.startswith("lstm.weight_ih_l"))
    four_hidden, input_size = weights["lstm.weight_ih_l0"]
    output_size, _ = weights["head.weight"]
    return ModelConfig(input_size=input_size, hidden_size=four_hidden // 4, num_layers=layers, output_size=output_size)


def eager_of(module: model_store.ScriptModule) -> tuple[LSTMRegressor, ModelConfig]:
    """An eager LSTMRegressor holding exactly the scripted module's weights (strict: every key, every shape)."""
    config = config_of(module)
    model = LSTMRegressor(config)
    model.load_state_dict(module.state_dict(), strict=True)
    return model.eval(), config


def export_version(
    store: model_store.Store, name: str, version: int | str | None, seed: int = 0
) -> model_store.Manifest:
    """Give a published version its ONNX and `.pt2` files, exported from its verified checkpoint's weights (which
    stay as they are); parity-checked against that TorchScript module. Returns the rewritten manifest; an entry's
    `error` says what failed, if anything did (nothing is then added but that record). A failed `.pt2` export of a
    version that has `.pt2` files keeps those; a failed ONNX export of a version that has ONNX files raises
    OnnxParityError and leaves the version as it was."""
    number = store.resolve(name, version)
    loaded = store.load(name, number)  # the checkpoint's sha256 checked; an ONNX-only version has none to export
    model, config = eager_of(loaded.module)
    entry, files = onnx_files(model, config, seed, references=(loaded.module,))
    earlier = loaded.manifest.onnx
    if entry.file is None and earlier is not None and earlier.file is not None:
        # A failure now must not unlist files that were exported and checked before.
        raise OnnxParityError(f"{entry.error}; {name} version {number} keeps its earlier ONNX files")
    pt2: model_store.Pt2Export | None
    pt2, pt2_bytes = pt2_files(model, config, seed, references=(loaded.module,))
    kept = loaded.manifest.pt2
    if pt2.file is None and kept is not None and kept.file is not None:
        pt2, pt2_bytes = None, {}  # the .pt2 files exported and checked before stay listed
    return store.add_onnx(name, number, entry, files | pt2_bytes, checkpoint=loaded.manifest.sha256, pt2=pt2)
