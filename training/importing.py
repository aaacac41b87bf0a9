"""Bring your own model: a checked TorchScript or ONNX file scored on the held-out suite and published as a version.

model_store.imported runs the file checks (size, format, load, shapes, finite outputs); this module adds the
held-out metrics a trained version gets (training/evaluate.py), saves the version through the store's atomic
save with a manifest whose `data` says it was imported (source, format, sha256), and applies the same promotion
policy as training (`never`, `if_better`, `always`). An imported TorchScript archive with this project's
`forward_state` and LSTMRegressor's weight layout serves sequences once its chunked parity check passes (else
the `sequence` check fails); any other file serves one-shot requests only: no `sequence` entry, so sequence
requests get the usual 409. An ONNX file becomes a version without a TorchScript checkpoint (manifest format
"onnx", its model.onnx the version's model), which ONNX Runtime serves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

import model_store
from model_store import onnx_runtime
from model_store.imported import CheckedModel, ImportCheckError, ImportFormat, check
from training.evaluate import evaluate
from training.export import config_of
from training.model import STATE_METHOD
from training.train import Promote, TrainingError, decide_promotion, sequence_support

DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # LSTM_IMPORT_MAX_BYTES's default


@dataclass(frozen=True)
class ImportResult:
    """The published manifest, and whether (and why) it was promoted."""

    manifest: model_store.Manifest
    promoted: bool
    promotion_reason: str


def _torch_forward(checked: CheckedModel) -> Any:
    def forward(x: torch.Tensor) -> torch.Tensor:
        # x (seq, batch, 1) float64 or float32 from the suite -> (seq, batch, 1) float32
        return torch.from_numpy(checked.forward(x.to(torch.float32).numpy()))

    return forward


def _sequence(module: model_store.ScriptModule) -> model_store.SequenceSupport | None:
    """The manifest's `sequence` entry when the archive carries state like a trained version, else None."""
    if not model_store.has_method(module, STATE_METHOD):
        return None
    try:
        config = config_of(module)  # from LSTMRegressor's weight names and shapes
    except (KeyError, ValueError):
        return None  # someone else's state-carrying method: nothing says what its state is
    try:
        return sequence_support(module, config, seed=0)
    except (TrainingError, RuntimeError) as exc:
        raise ImportCheckError("sequence", f"{STATE_METHOD} does not chain like forward: {str(exc)[:300]}") from None


def import_model(
    store: model_store.Store,
    name: str,
    data: bytes,
    fmt: ImportFormat | None = None,
    source: str = "",
    promote: Promote = "never",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ImportResult:
    """Check `data`, score it, publish it as a new version of `name` (whole or not at all) and maybe promote it."""
    model_store.check_name(name)
    checked = check(data, fmt, max_bytes)
    sequence = None if checked.module is None else _sequence(checked.module)
    forward = _torch_forward(checked)
    metrics = evaluate(forward)
    if not all(math.isfinite(float(metrics[key])) for key in ("worst_mse", "mean_mse", "tutorial_test_mse")):
        raise ImportCheckError("finite", "the held-out suite gave NaN or infinite errors")
    promoted, reason = decide_promotion(store, name, forward, None, promote)
    imported = {
        "kind": "imported",
        "source": source,
        "format": checked.format,
        "sha256": checked.sha256,
        "bytes": checked.size,
        "shapes_checked": [list(shape) for shape in checked.shapes_checked],
    }
    onnx, files = None, {}
    if checked.onnx_bytes is not None:  # the ONNX file is the version's model: no TorchScript checkpoint
        onnx = model_store.OnnxExport(file=onnx_runtime.FORWARD_FILE, sha256=checked.sha256, exporter="imported")
        files = {onnx_runtime.FORWARD_FILE: checked.onnx_bytes}
    manifest = store.save(
        name,
        checked.module,
        inputs=(model_store.sequence_spec("input", 1),),
        outputs=(model_store.sequence_spec("output", 1),),
        params={"imported": True, "torch_threads": torch.get_num_threads()},
        metrics=metrics,
        data=imported,
        extra_files=files,
        sequence=sequence,
        onnx=onnx,
    )
    if promoted:
        store.set_alias(name, model_store.PRODUCTION, manifest.version)
    return ImportResult(manifest=manifest, promoted=promoted, promotion_reason=reason)


__all__ = ["ImportCheckError", "ImportResult", "import_model"]
