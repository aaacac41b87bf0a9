"""torch.export ExportedProgram archives (`.pt2`): the one module that touches torch.export.

A `.pt2` is the forward-looking archive beside the TorchScript checkpoint (deprecated since torch 2.11) and the ONNX
files; the service does not load it (docs/runtimes.md). nn.LSTM would specialise the sequence length of the example
(an ExportedProgram that answers (100, 1, 1) with (20, 5, 1)), so it is exported under torch's own
`register_lstm_while_loop_decomposition()`, which traces the LSTM as a `while_loop` over the steps: seq and batch
stay free. That context swaps the kernel of `aten.lstm.input` while it is active, and the op caches the kernel it
dispatched to, so the cache is cleared before and after (else a kernel of the other side of the swap could run).
`run_decompositions()` is never called: it would decompose the loop away and bring the specialisation back.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.export._patches  # not imported by `import torch`
from torch import nn

from model_store.onnx_runtime import StateCarrying

FORWARD_FILE = "model.pt2"
STATE_FILE = "model_state.pt2"
EXPORTER = (
    f"torch.export.export (strict, nn.LSTM under register_lstm_while_loop_decomposition), torch {torch.__version__}"
)
# The example's batch (5) differs from 1 on purpose: a dimension of size 1 would be taken for a constant.
EXAMPLE_SEQ, EXAMPLE_BATCH = 20, 5
# What torch 2.13's while_loop tracing says of its own helper on every export (strict mode; the non-strict mode
# adds a warning about nn.LSTM's _flat_weights being reassigned, hence strict).
_EXPORT_WARNING = r"_check_is_size will be removed in a future PyTorch release"


@contextmanager
def _lstm_as_loop() -> Iterator[None]:
    lstm = torch.ops.aten.lstm.input
    lstm._dispatch_cache.clear()
    try:
        with torch.export._patches.register_lstm_while_loop_decomposition():
            yield
    finally:
        lstm._dispatch_cache.clear()


def _export(module: nn.Module, example: tuple[torch.Tensor, ...], shapes: tuple[dict[int, Any], ...]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EXPORT_WARNING, category=FutureWarning)
        # no_grad: an inference archive (torch's while_loop has no autograd anyway), and with gradients on, strict
        # tracing reads the .grad of non-leaf weights and warns.
        with _lstm_as_loop(), torch.no_grad():
            program = torch.export.export(module.eval(), example, dynamic_shapes=shapes, strict=True)
        torch.export.save(program, buffer)
    return buffer.getvalue()


def _dims() -> tuple[Any, Any]:
    return torch.export.Dim("seq", min=1), torch.export.Dim("batch", min=1)


def export_forward(module: nn.Module, input_size: int) -> bytes:
    """The `.pt2` bytes of an eager module's `forward(x)`: x (seq, batch, input), both dimensions free."""
    seq, batch = _dims()
    example = torch.zeros(EXAMPLE_SEQ, EXAMPLE_BATCH, input_size)  # (seq, batch, input)
    return _export(module, (example,), ({0: seq, 1: batch},))


def export_state(module: nn.Module, method: str, input_size: int, num_layers: int, hidden_size: int) -> bytes:
    """The `.pt2` bytes of an eager module's state-carrying `method(x, h, c) -> (y, h_n, c_n)`, seq and batch free."""
    seq, batch = _dims()
    x = torch.zeros(EXAMPLE_SEQ, EXAMPLE_BATCH, input_size)  # (seq, batch, input)
    h = torch.zeros(num_layers, EXAMPLE_BATCH, hidden_size)  # (num_layers, batch, hidden)
    shapes = ({0: seq, 1: batch}, {1: batch}, {1: batch})
    return _export(StateCarrying(module, method), (x, h, h.clone()), shapes)


def load(data: bytes) -> Callable[..., Any]:
    """The program a `.pt2` holds, as a callable (for the parity checks; the service does not load `.pt2` files)."""
    # Loading logs a warning per unbacked symbol of the while_loop ("Symbol u0 did not appear in the graph"): the
    # loop's step counters, which the graph does not need by name. Quietened for the call only.
    serde = logging.getLogger("torch._export.serde.serialize")
    level = serde.level
    serde.setLevel(logging.ERROR)
    try:
        program = torch.export.load(io.BytesIO(data))
    finally:
        serde.setLevel(level)
    module: Callable[..., Any] = program.module()
    return module
