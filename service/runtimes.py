"""The engines that run a loaded version, TorchScript or ONNX Runtime, and which one serves it (LSTM_RUNTIME).

`auto` serves a version with ONNX Runtime when its manifest names an ONNX file that matches its sha256, loads,
and answers like the TorchScript module on a few inputs (within VERIFY_TOLERANCE); otherwise with TorchScript,
and the reason is kept (`Runtime.note`) for /models. Under auto, calls of several sequences and more than
LSTM_ONNX_MAX_ELEMENTS elements still run in TorchScript, which is faster there (OnnxRuntime's docstring).
`onnxruntime` refuses a version that fails any of that (it is then a load failure, reported like a corrupt
checkpoint) and runs every call in ONNX Runtime; `torchscript` never reads the ONNX files.

An imported ONNX model (manifest format "onnx") has no TorchScript checkpoint: ONNX Runtime runs every call of it
under auto and onnxruntime alike (`choose_onnx_only`), after its sha256 and the import's shape checks pass again;
LSTM_RUNTIME=torchscript refuses it (a load failure that says why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

import model_store
from model_store import onnx_runtime

log = logging.getLogger("service.runtimes")

RuntimeChoice = Literal["auto", "onnxruntime", "torchscript"]
RuntimeName = Literal["torchscript", "onnxruntime"]
TORCHSCRIPT: RuntimeName = "torchscript"
ONNXRUNTIME: RuntimeName = "onnxruntime"
RUNTIMES: tuple[RuntimeName, ...] = (TORCHSCRIPT, ONNXRUNTIME)
# The platform names of the Open Inference Protocol's model metadata (Triton's backend names).
PLATFORMS = {TORCHSCRIPT: "pytorch_torchscript", ONNXRUNTIME: "onnxruntime_onnx"}
VERIFY_TOLERANCE = 1e-5
# (seq, batch) of the verification and warm-up inputs: seq 1, a small batch, a longer sequence.
VERIFY_SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (20, 5), (100, 1))
WARMUP_CALLS = 2  # per shape: TorchScript's profiling executor optimises on the second call

State = tuple[np.ndarray, np.ndarray, np.ndarray]


class TorchScriptRuntime:
    """Runs the verified TorchScript module."""

    name: RuntimeName = TORCHSCRIPT

    def __init__(self, module: model_store.ScriptModule, method: str | None, note: str | None = None) -> None:
        self.module = module
        self.method = method  # the state-carrying method, None for versions without sequence support
        self.note = note  # why this runtime serves (e.g. why ONNX Runtime does not), for /models

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(seq, batch, input) float32 -> (seq, batch, output) float32."""
        with torch.inference_mode():
            output: np.ndarray = self.module(torch.from_numpy(x)).numpy()
        return output

    def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> State:
        """x (seq, batch, input), h and c (num_layers, batch, hidden) -> y, h_n, c_n; all float32."""
        assert self.method is not None, "step of a version without sequence support"
        with torch.inference_mode():
            y, h_n, c_n = getattr(self.module, self.method)(
                torch.from_numpy(x), torch.from_numpy(h), torch.from_numpy(c)
            )
            return y.numpy(), h_n.numpy(), c_n.numpy()


class OnnxRuntime:
    """Runs the version's model.onnx in ONNX Runtime; its steps run model_state.onnx (or, without that file,
    TorchScript's state-carrying method).

    With `max_elements`, a larger call (seq x batch x input elements) of more than one sequence runs in TorchScript
    instead: ONNX Runtime's per-call overhead is a third of TorchScript's, but its LSTM costs about linearly in
    seq x batch while torch's batches its matrix products better, so here ONNX Runtime is 1.2 to 3x faster up to
    about 500 elements (and for one sequence of any length to 2000) and up to 2x slower on large batches
    (docs/runtimes.md). Both answer alike (checked at load within VERIFY_TOLERANCE), so which one runs a call is a
    matter of speed only.
    """

    name: RuntimeName = ONNXRUNTIME

    def __init__(
        self,
        forward: onnx_runtime.OnnxSession,
        state: onnx_runtime.OnnxSession | None,
        fallback: TorchScriptRuntime | None,
        max_elements: int | None = None,
        note: str | None = None,
    ) -> None:
        self.forward = forward
        self.state = state
        self.fallback = fallback  # None for an imported ONNX model: every call runs in ONNX Runtime
        # No limit (or nothing to hand large calls to): every call in ONNX Runtime.
        self.max_elements = max_elements if max_elements is not None and fallback is not None else 1 << 62
        notes = [] if note is None else [note]
        if max_elements is not None and fallback is not None:
            notes.append(f"calls of several sequences and more than {max_elements} elements run in TorchScript")
        if state is None and fallback is not None and fallback.method is not None:
            notes.append("steps of sequences run in TorchScript")
        self.note = "; ".join(notes) or None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(seq, batch, input) float32 -> (seq, batch, output) float32."""
        if self.fallback is not None and x.size > self.max_elements and x.shape[1] > 1:
            return self.fallback(x)
        output: np.ndarray = self.forward.run(x)[0]
        return output

    def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> State:
        """x (seq, batch, input), h and c (num_layers, batch, hidden) -> y, h_n, c_n; all float32."""
        if self.fallback is not None and (self.state is None or (x.size > self.max_elements and x.shape[1] > 1)):
            return self.fallback.step(x, h, c)
        assert self.state is not None, "step of a version without sequence support"
        y, h_n, c_n = self.state.run(x, h, c)
        return y, h_n, c_n


Runtime = TorchScriptRuntime | OnnxRuntime


def _inputs(manifest: model_store.Manifest, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((seq, batch, manifest.input_size)).astype(np.float32) for seq, batch in VERIFY_SHAPES]


def _differs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max())


def _verify(runtime: OnnxRuntime, reference: TorchScriptRuntime, manifest: model_store.Manifest) -> None:
    """IntegrityError unless the ONNX files answer like the TorchScript module (forward, and steps if stateful)."""
    for x in _inputs(manifest, seed=0):
        worst = _differs(runtime(x), reference(x))
        if not worst <= VERIFY_TOLERANCE:
            raise model_store.IntegrityError(
                f"model.onnx answers unlike the TorchScript checkpoint at shape {list(x.shape)} "
                f"(max |difference| {worst:.3g} > {VERIFY_TOLERANCE:g})"
            )
    support = manifest.sequence
    if runtime.state is None or support is None or reference.method is None:
        return
    rng = np.random.default_rng(1)
    for x in _inputs(manifest, seed=1):
        shape = (support.num_layers, x.shape[1], support.hidden_size)
        h, c = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
        worst = max(_differs(a, b) for a, b in zip(runtime.step(x, h, c), reference.step(x, h, c), strict=True))
        if not worst <= VERIFY_TOLERANCE:
            raise model_store.IntegrityError(
                f"model_state.onnx answers unlike the TorchScript checkpoint at shape {list(x.shape)} "
                f"(max |difference| {worst:.3g} > {VERIFY_TOLERANCE:g})"
            )


def _onnx(
    store: model_store.Store,
    manifest: model_store.Manifest,
    reference: TorchScriptRuntime,
    threads: int,
    max_elements: int | None,
) -> OnnxRuntime:
    """The version's ONNX Runtime, checked (sha256, load, answers); IntegrityError saying what failed."""
    entry = manifest.onnx
    if entry is None or entry.file is None or entry.sha256 is None:
        why = "exported before ONNX files" if entry is None else f"its ONNX export failed ({entry.error})"
        raise model_store.IntegrityError(f"no ONNX file: {why}; `lstm-train export` adds one")
    name, version = manifest.name, manifest.version
    forward = onnx_runtime.load(store.read_checked(name, version, entry.file, entry.sha256), threads)
    state = None
    if entry.state_file is not None and entry.state_sha256 is not None and manifest.sequence is not None:
        data = store.read_checked(name, version, entry.state_file, entry.state_sha256)
        state = onnx_runtime.load(data, threads, expected_inputs=onnx_runtime.STATE_INPUTS)
    runtime = OnnxRuntime(forward, state, reference)
    _verify(runtime, reference, manifest)  # every call in ONNX Runtime
    runtime = OnnxRuntime(forward, state, reference, max_elements)
    return runtime


def choose(
    store: model_store.Store,
    loaded: model_store.LoadedModel,
    choice: RuntimeChoice,
    threads: int = 1,
    auto_max_elements: int | None = None,
) -> Runtime:
    """The runtime that serves a loaded, verified version under `choice`, warmed up.

    IntegrityError (the version is then not served) when `choice` is onnxruntime and its ONNX files do not
    verify; with auto, TorchScript serves instead and its `note` says why. With auto, calls of several sequences and
    more than `auto_max_elements` elements run in TorchScript (None: none do); onnxruntime runs all in ONNX Runtime.
    """
    manifest = loaded.manifest
    support = manifest.sequence
    method = support.method if support is not None and model_store.has_method(loaded.module, support.method) else None
    torchscript = TorchScriptRuntime(loaded.module, method)
    runtime: Runtime = torchscript
    if choice != TORCHSCRIPT:
        try:
            runtime = _onnx(store, manifest, torchscript, threads, auto_max_elements if choice == "auto" else None)
        except (model_store.StoreError, OSError) as exc:
            if choice == ONNXRUNTIME:
                raise model_store.IntegrityError(
                    f"ONNX Runtime cannot serve {manifest.name} version {manifest.version} (LSTM_RUNTIME=onnxruntime "
                    f"serves only versions whose ONNX files verify): {exc}"
                ) from None
            if manifest.onnx is not None and manifest.onnx.file is not None:  # a file there but unusable: say so
                log.warning("serving %s version %s with TorchScript: %s", manifest.name, manifest.version, exc)
            torchscript.note = str(exc)
    _warm_up(runtime, manifest)
    return runtime


IMPORTED_NOTE = "an imported ONNX model (no TorchScript checkpoint): ONNX Runtime runs every call"


def choose_onnx_only(
    store: model_store.Store, manifest: model_store.Manifest, choice: RuntimeChoice, threads: int = 1
) -> OnnxRuntime:
    """The runtime of an imported ONNX model (no TorchScript checkpoint), warmed up: ONNX Runtime under auto and
    onnxruntime; IntegrityError (not served) under torchscript, when its file does not match its sha256 or load,
    or when it no longer answers (seq, batch, input) float32 with finite float32 of the same shape."""
    name, version, entry = manifest.name, manifest.version, manifest.onnx
    if choice == TORCHSCRIPT:
        raise model_store.IntegrityError(
            f"LSTM_RUNTIME=torchscript cannot serve {name} version {version}: it is an imported ONNX model without "
            "a TorchScript checkpoint; serve it with LSTM_RUNTIME=auto or onnxruntime"
        )
    if entry is None or entry.file is None or entry.sha256 is None:
        raise model_store.IntegrityError(f"{name} version {version} names no ONNX file and has no checkpoint")
    session = onnx_runtime.OnnxSession(store.read_checked(name, version, entry.file, entry.sha256), threads)
    if len(session.inputs) != 1 or len(session.outputs) != 1:
        raise model_store.IntegrityError(
            f"{entry.file} takes {list(session.inputs)} and gives {list(session.outputs)}; expected one each"
        )
    runtime = OnnxRuntime(session, None, None, note=IMPORTED_NOTE)
    for x in _inputs(manifest, seed=0):
        try:
            y = runtime(x)
        except Exception as exc:  # what ONNX Runtime raises for an input the graph refuses
            raise model_store.IntegrityError(
                f"{entry.file} refuses a {list(x.shape)} input: {str(exc)[:300]}"
            ) from None
        if y.shape != x.shape[:2] + (manifest.outputs[0].shape[-1],) or y.dtype != np.float32:
            raise model_store.IntegrityError(f"{entry.file} answers {list(x.shape)} with {y.dtype} {list(y.shape)}")
        if not np.isfinite(y).all():
            raise model_store.IntegrityError(f"{entry.file} answers {list(x.shape)} with NaN or infinite outputs")
    _warm_up(runtime, manifest)
    return runtime


def _warm_up(runtime: Runtime, manifest: model_store.Manifest) -> None:
    """A few forwards before the first request, so it does not pay for first-call allocation and optimisation
    (in both engines when ONNX Runtime hands large calls to TorchScript)."""
    calls: list[Callable[[np.ndarray], object]] = [runtime]
    if isinstance(runtime, OnnxRuntime):
        calls = [runtime.forward.run, *([] if runtime.fallback is None else [runtime.fallback])]
    for call in calls:
        for x in _inputs(manifest, seed=2):
            for _ in range(WARMUP_CALLS):
                call(x)
