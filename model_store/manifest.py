"""The manifest of one model version: its fields and their JSON form."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Self

MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILE = "model.pt"
FORMAT = "torchscript"
# An imported ONNX model without model.pt: the manifest's sha256 is its ONNX file's; ONNX Runtime serves it.
ONNX_FORMAT = "onnx"


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor a model takes or gives; -1 marks a free dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TensorSpec:
        return cls(name=str(raw["name"]), datatype=str(raw["datatype"]), shape=tuple(int(d) for d in raw["shape"]))


def sequence_spec(name: str, features: int) -> TensorSpec:
    """A time-major (seq, batch, features) float32 tensor with free seq and batch."""
    return TensorSpec(name=name, datatype="FP32", shape=(-1, -1, features))


@dataclass(frozen=True)
class SequenceSupport:
    """How a version carries the LSTM's state between chunks: `method(x, h, c) -> (y, h_n, c_n)`.

    x is (seq, batch, input), h and c are (num_layers, batch, hidden_size); `parity_max_abs_diff` is the
    worst difference between chunked and one-shot outputs measured at export.
    """

    method: str
    num_layers: int
    hidden_size: int
    parity_max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SequenceSupport:
        return cls(
            method=str(raw["method"]),
            num_layers=int(raw["num_layers"]),
            hidden_size=int(raw["hidden_size"]),
            parity_max_abs_diff=float(raw["parity_max_abs_diff"]),
        )


@dataclass(frozen=True)
class ExportedFiles:
    """A version's files of one optional format, or why it has none (`error`, with `file` None).

    `file` holds `forward` (input -> output); `state_file` the state-carrying method (input, h0, c0 -> output, hn,
    cn), None when that export failed (`error` says why) or the version was exported without it. Each sha256 is
    checked when the file is read; `parity_max_abs_diff` is the worst difference from the eager (or TorchScript)
    model measured at export, over every shape tried and both files.
    """

    file: str | None
    sha256: str | None
    state_file: str | None = None
    state_sha256: str | None = None
    parity_max_abs_diff: float | None = None
    exporter: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        def text(key: str) -> str | None:
            value = raw.get(key)
            return None if value is None else str(value)

        parity = raw.get("parity_max_abs_diff")
        return cls(
            file=text("file"),
            sha256=text("sha256"),
            state_file=text("state_file"),
            state_sha256=text("state_sha256"),
            parity_max_abs_diff=None if parity is None else float(parity),
            exporter=str(raw.get("exporter", "")),
            error=text("error"),
        )

    def checksums(self) -> dict[str, str]:
        """{file name: sha256} of the files this export holds."""
        found = {}
        if self.file is not None and self.sha256 is not None:
            found[self.file] = self.sha256
        if self.state_file is not None and self.state_sha256 is not None:
            found[self.state_file] = self.state_sha256
        return found


@dataclass(frozen=True)
class OnnxExport(ExportedFiles):
    """The version's ONNX files for ONNX Runtime (model.onnx, model_state.onnx), or why it has none."""


@dataclass(frozen=True)
class Pt2Export(ExportedFiles):
    """The version's torch.export ExportedPrograms (model.pt2, model_state.pt2), or why it has none; an archive
    for what comes after TorchScript, not loaded by the service (docs/runtimes.md)."""


@dataclass(frozen=True)
class Manifest:
    """Everything needed to trust, serve and reproduce one version.

    `params` are the training hyper-parameters, `metrics` the held-out suite's numbers,
    `data` a description of the training data; all three are plain JSON objects. `sequence` is None for
    versions exported before the state-carrying method (they serve one-shot requests only). `onnx` is None for
    versions exported before ONNX files (they are served by TorchScript; `lstm-train export` adds them). `pt2` is
    None for versions exported before `.pt2` files (and for imported ones). `format` is "torchscript" (`sha256` is
    model.pt's) or, for an imported ONNX model, "onnx": no model.pt, `sha256` is `onnx.sha256` (model.onnx's).
    """

    name: str
    version: int
    created_at: str
    sha256: str
    torch_version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = (CHECKPOINT_FILE, MANIFEST_FILE)
    format: str = FORMAT
    sequence: SequenceSupport | None = None
    onnx: OnnxExport | None = None
    pt2: Pt2Export | None = None

    @property
    def has_checkpoint(self) -> bool:
        """Whether the version has a TorchScript checkpoint (model.pt); an imported ONNX model has none."""
        return self.format != ONNX_FORMAT

    @property
    def input_size(self) -> int:
        return self.inputs[0].shape[-1]

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["inputs"] = [spec.to_dict() for spec in self.inputs]
        raw["outputs"] = [spec.to_dict() for spec in self.outputs]
        raw["files"] = list(self.files)
        raw["sequence"] = None if self.sequence is None else self.sequence.to_dict()
        raw["onnx"] = None if self.onnx is None else self.onnx.to_dict()
        raw["pt2"] = None if self.pt2 is None else self.pt2.to_dict()
        return raw

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        return cls(
            name=str(raw["name"]),
            version=int(raw["version"]),
            created_at=str(raw["created_at"]),
            sha256=str(raw["sha256"]),
            torch_version=str(raw["torch_version"]),
            inputs=tuple(TensorSpec.from_dict(s) for s in raw["inputs"]),
            outputs=tuple(TensorSpec.from_dict(s) for s in raw["outputs"]),
            params=dict(raw.get("params", {})),
            metrics=dict(raw.get("metrics", {})),
            data=dict(raw.get("data", {})),
            files=tuple(str(f) for f in raw.get("files", (CHECKPOINT_FILE, MANIFEST_FILE))),
            format=str(raw.get("format", FORMAT)),
            sequence=None if raw.get("sequence") is None else SequenceSupport.from_dict(raw["sequence"]),
            onnx=None if raw.get("onnx") is None else OnnxExport.from_dict(raw["onnx"]),
            pt2=None if raw.get("pt2") is None else Pt2Export.from_dict(raw["pt2"]),
        )

    @classmethod
    def from_json(cls, text: bytes | str) -> Manifest:
        return cls.from_dict(json.loads(text))
