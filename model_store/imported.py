"""The checks an imported model file passes before it is published: size, format, load, shapes, finite outputs.

A user's TorchScript archive is loaded only by torchscript.from_bytes (a zip read by torch.jit's own loader, never
Python's pickle); an ONNX file only by ONNX Runtime. Every failure is an ImportCheckError naming the check.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from model_store import onnx_runtime, torchscript
from model_store.errors import StoreError

ImportFormat = Literal["torchscript", "onnx"]
FORMATS: tuple[ImportFormat, ...] = ("torchscript", "onnx")
# (seq, batch): seq 1, batches of 1 and more, and a long sequence.
CHECK_SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (1, 4), (7, 3), (64, 2), (1500, 1))
CHECK_SEED = 20_261_202
Check = Literal["size", "format", "load", "input", "output", "finite", "sequence"]
Forward = Callable[[np.ndarray], np.ndarray]  # (seq, batch, 1) float32 -> (seq, batch, 1) float32


class ImportCheckError(StoreError):
    """An imported file that failed `check` (size, format, load, input, output, finite or sequence); the message
    says why."""

    def __init__(self, check: Check, message: str) -> None:
        self.check = check
        super().__init__(f"import check {check!r} failed: {message}")


@dataclass(frozen=True)
class CheckedModel:
    """A file that passed every check: its format, sha256, the loaded module (TorchScript) and its forward."""

    format: ImportFormat
    sha256: str
    size: int
    forward: Forward
    module: torchscript.ScriptModule | None
    onnx_bytes: bytes | None
    shapes_checked: tuple[tuple[int, int, int], ...]


def detect_format(data: bytes) -> ImportFormat:
    """torchscript for a zip archive, else onnx (ONNX files are protobuf, with no magic number of their own)."""
    return "torchscript" if zipfile.is_zipfile(io.BytesIO(data)) else "onnx"


def _looks_pickled(data: bytes) -> bool:
    # Pickle protocols 2-5 open with PROTO (0x80) and the protocol number; ONNX's protobuf opens with a field tag.
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def _load(data: bytes, fmt: ImportFormat) -> tuple[Forward, torchscript.ScriptModule | None]:
    if fmt == "torchscript":
        if not zipfile.is_zipfile(io.BytesIO(data)):
            kind = "a pickle file (never unpickled here)" if _looks_pickled(data) else "not a zip archive"
            raise ImportCheckError("format", f"expected a TorchScript archive (a zip file), got {kind}")
        try:
            module = torchscript.from_bytes(data)
        except Exception as exc:  # whatever a malformed or hostile archive makes the restricted loader raise
            raise ImportCheckError("load", f"the TorchScript archive does not load: {str(exc)[:300]}") from None

        def scripted(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                result = module(torch.from_numpy(x))
            if not isinstance(result, torch.Tensor):
                raise ImportCheckError("output", f"forward returned {type(result).__name__}, expected one tensor")
            return result.detach().numpy()

        return scripted, module
    if _looks_pickled(data) or zipfile.is_zipfile(io.BytesIO(data)):
        raise ImportCheckError("format", "expected an ONNX file, got a pickle file or a zip archive")
    try:
        session = onnx_runtime.OnnxSession(data)
    except Exception as exc:
        raise ImportCheckError("format", f"not an ONNX model ONNX Runtime can load: {str(exc)[:300]}") from None
    if len(session.inputs) != 1 or len(session.outputs) != 1:
        raise ImportCheckError(
            "input", f"the ONNX graph takes {list(session.inputs)} and gives {list(session.outputs)}; expected one each"
        )

    def onnx_forward(x: np.ndarray) -> np.ndarray:
        (y,) = session.run(x)
        return y

    return onnx_forward, None


def check(data: bytes, fmt: ImportFormat | None, max_bytes: int) -> CheckedModel:
    """Run every check on `data` (format None: detect it); ImportCheckError naming the first that fails."""
    if len(data) > max_bytes:
        raise ImportCheckError("size", f"the file has {len(data)} bytes, more than the limit of {max_bytes}")
    if not data:
        raise ImportCheckError("format", "the file is empty")
    fmt = detect_format(data) if fmt is None else fmt
    forward, module = _load(data, fmt)
    rng = np.random.default_rng(CHECK_SEED)
    shapes = []
    for seq, batch in CHECK_SHAPES:
        x = rng.uniform(-1.0, 1.0, (seq, batch, 1)).astype(np.float32)  # (seq, batch, 1)
        try:
            y = forward(x)
        except ImportCheckError:
            raise
        except Exception as exc:  # the model refused the input: it does not take (seq, batch, 1) float32
            raise ImportCheckError(
                "input", f"the model does not take a (seq, batch, 1) float32 input {x.shape}: {str(exc)[:300]}"
            ) from None
        if tuple(y.shape) != x.shape or y.dtype != np.float32:
            raise ImportCheckError(
                "output", f"input {x.shape} gave {y.dtype} {tuple(y.shape)}; expected float32 of the same shape"
            )
        if not np.isfinite(y).all():
            raise ImportCheckError("finite", f"input {x.shape} gave NaN or infinite outputs")
        shapes.append((seq, batch, 1))
    return CheckedModel(
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        forward=forward,
        module=module,
        onnx_bytes=data if fmt == "onnx" else None,
        shapes_checked=tuple(shapes),
    )
