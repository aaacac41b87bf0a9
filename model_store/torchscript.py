"""TorchScript export, serialisation and loading: the one module that touches torch.jit.

TorchScript is deprecated in torch 2.13 and every torch.jit entry point warns; the design asks
for it, so this module silences exactly that deprecation warning and nothing else. A move to
torch.export changes this file only.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
from torch import nn

from model_store.errors import IntegrityError

# The message torch 2.13 gives for torch.jit.script/save/load.
JIT_DEPRECATION_MESSAGE = r"`torch\.jit\.\w+` is deprecated"
warnings.filterwarnings("ignore", message=JIT_DEPRECATION_MESSAGE, category=DeprecationWarning)

ScriptModule = torch.jit.ScriptModule
Method = TypeVar("Method", bound=Callable[..., Any])


def export_method(method: Method) -> Method:
    """Mark a method of an nn.Module to be compiled and saved beside `forward` (torch.jit.export)."""
    return cast(Method, torch.jit.export(method))


def has_method(module: ScriptModule, name: str) -> bool:
    """Whether a scripted module carries the compiled method `name` (an archive exported before it did not)."""
    return bool(module._c._has_method(name))


def script(module: nn.Module) -> ScriptModule:
    """Compile an eager module to TorchScript (in eval mode)."""
    scripted = torch.jit.script(module.eval())
    assert isinstance(scripted, torch.jit.ScriptModule)
    return scripted


def to_bytes(module: ScriptModule) -> bytes:
    """Serialise a scripted module to the bytes of a TorchScript archive."""
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> ScriptModule:
    """Load a TorchScript archive; anything else (e.g. a pickled checkpoint) is refused."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise IntegrityError("checkpoint is not a TorchScript archive (expected a zip file)")
    try:
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")  # type: ignore[no-untyped-call]
    except RuntimeError as exc:  # torch reports a malformed archive as RuntimeError
        raise IntegrityError(f"checkpoint is not a loadable TorchScript archive: {exc}") from exc
    if not isinstance(loaded, torch.jit.ScriptModule):
        raise IntegrityError("checkpoint did not load as a TorchScript module")
    loaded.eval()
    return loaded
