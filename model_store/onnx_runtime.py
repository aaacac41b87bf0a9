"""ONNX export, and ONNX files loaded and run in ONNX Runtime: the one module that touches torch.onnx and onnxruntime.

Export uses torch 2.13's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): it writes nn.LSTM
as the native ONNX `LSTM` op with free seq and batch dimensions. The torch.export-based exporter (the default)
silently bakes in the example's sequence length unless nn.LSTM is exported under the private
`torch.export._patches.register_lstm_while_loop_decomposition()`, takes ten times longer here and needs
onnxscript; docs/runtimes.md has the measurements. The old exporter is deprecated and warns; this module
silences exactly its warnings around the export call, and nothing else.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from model_store.errors import IntegrityError

OPSET = 17
EXPORTER = f"torch.onnx TorchScript-based exporter (dynamo=False), torch {torch.__version__}, opset {OPSET}"
FORWARD_FILE = "model.onnx"
STATE_FILE = "model_state.onnx"
# forward: input (seq, batch, input) -> output (seq, batch, output)
FORWARD_INPUTS, FORWARD_OUTPUTS = ("input",), ("output",)
# state-carrying: input, h0, c0 (num_layers, batch, hidden) -> output, hn, cn (num_layers, batch, hidden)
STATE_INPUTS, STATE_OUTPUTS = ("input", "h0", "c0"), ("output", "hn", "cn")
# The example's batch (5) differs from 1 on purpose: a dimension of size 1 could be taken for a constant.
EXAMPLE_SEQ, EXAMPLE_BATCH = 20, 5

_SEQUENCE_AXES = {0: "seq", 1: "batch"}
_STATE_AXES = {1: "batch"}
# What the old exporter says on every call: it is deprecated, nn.LSTM's argument checks look like Python bools to
# its tracer, and a variable-length LSTM exported at batch 5 warns (the initial state is built from the input's
# shape, and the state-carrying variant takes it as inputs, so either serves any batch; the parity checks show it).
_EXPORT_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"You are using the legacy TorchScript-based ONNX export", DeprecationWarning),
    (r"The feature will be removed", DeprecationWarning),
    (r"Converting a tensor to a Python boolean", Warning),  # a TracerWarning
    (r"Exporting a model to ONNX with a batch_size other than 1", UserWarning),
)


class StateCarrying(nn.Module):
    """An eager module's state-carrying method as the `forward` an exporter traces (ONNX's, and torch.export's in
    model_store/pt2_export.py)."""

    def __init__(self, inner: nn.Module, method: str) -> None:
        super().__init__()
        self.inner = inner
        self.method = method

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result: tuple[torch.Tensor, ...] = getattr(self.inner, self.method)(x, h, c)
        return result


def _export(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    inputs: Sequence[str],
    outputs: Sequence[str],
    axes: dict[str, dict[int, str]],
) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        for message, category in _EXPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        torch.onnx.export(
            module.eval(),
            example,
            buffer,  # type: ignore[arg-type]  # the annotation names paths; the TorchScript-based exporter takes files
            dynamo=False,
            opset_version=OPSET,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
        )
    return buffer.getvalue()


def export_forward(module: nn.Module, input_size: int) -> bytes:
    """The ONNX bytes of an eager module's `forward(x)`: x (seq, batch, input), both dimensions free."""
    example = torch.zeros(EXAMPLE_SEQ, EXAMPLE_BATCH, input_size)  # (seq, batch, input)
    axes = {"input": _SEQUENCE_AXES, "output": _SEQUENCE_AXES}
    return _export(module, (example,), FORWARD_INPUTS, FORWARD_OUTPUTS, axes)


def export_state(module: nn.Module, method: str, input_size: int, num_layers: int, hidden_size: int) -> bytes:
    """The ONNX bytes of an eager module's state-carrying `method(x, h, c) -> (y, h_n, c_n)`, seq and batch free."""
    x = torch.zeros(EXAMPLE_SEQ, EXAMPLE_BATCH, input_size)  # (seq, batch, input)
    h = torch.zeros(num_layers, EXAMPLE_BATCH, hidden_size)  # (num_layers, batch, hidden)
    axes = {"input": _SEQUENCE_AXES, "output": _SEQUENCE_AXES} | dict.fromkeys(("h0", "c0", "hn", "cn"), _STATE_AXES)
    return _export(StateCarrying(module, method), (x, h, h.clone()), STATE_INPUTS, STATE_OUTPUTS, axes)


def operators(data: bytes) -> set[str]:
    """The op types of an ONNX file's graph (e.g. to check that nn.LSTM became the native `LSTM`)."""
    import onnx  # only export-side checks need the onnx package; serving needs onnxruntime alone

    return {node.op_type for node in onnx.load_from_string(data).graph.node}


class OnnxSession:
    """An ONNX file loaded in ONNX Runtime (CPU), run on float32 numpy arrays in the graph's input order."""

    def __init__(self, data: bytes, threads: int = 1) -> None:
        # Imported on first use: a process that never loads an ONNX file (LSTM_RUNTIME=torchscript, lstm-train
        # before its export) does not pay for its import (~90 ms, 16 MiB).
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One intra-op thread by default: the worker's CPU budget is shared by its requests, not one forward.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, not our logs
        try:
            self._session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... for a file it cannot load
            raise IntegrityError(f"not a loadable ONNX model: {str(exc)[:300]}") from None
        self.inputs = tuple(str(arg.name) for arg in self._session.get_inputs())
        self.outputs = tuple(str(arg.name) for arg in self._session.get_outputs())
        self.threads = threads

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for `arrays` (one per input, in order)."""
        results: list[np.ndarray] = self._session.run(None, dict(zip(self.inputs, arrays, strict=True)))
        return results


def load(data: bytes, threads: int = 1, expected_inputs: Sequence[str] = FORWARD_INPUTS) -> OnnxSession:
    """An ONNX Runtime session of `data`, refused (IntegrityError) unless it loads with exactly those inputs."""
    session = OnnxSession(data, threads)
    if session.inputs != tuple(expected_inputs):
        raise IntegrityError(f"ONNX model takes inputs {list(session.inputs)}, expected {list(expected_inputs)}")
    return session
