"""The serving benchmark's requests: payloads, the body of each kind (route) per payload, and answers decoded.

A kind is one way to send the same tensor: /predict (nested JSON), OIP JSON (flat data) and OIP binary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

MODEL = "lstm"


@dataclass(frozen=True)
class Payload:
    name: str
    seq: int
    batch: int


PAYLOADS = (Payload("small", 20, 5), Payload("large", 500, 64))
KINDS = ("predict", "oip_json", "oip_binary")
KIND_LABEL = {"predict": "/predict", "oip_json": "OIP JSON", "oip_binary": "OIP binary", "get": "GET"}
APP_KINDS: dict[str, tuple[str, ...]] = {"lstm": KINDS, "naive": ("predict",), "trivial": KINDS}


@dataclass(frozen=True)
class Body:
    """One request of one kind for one payload, as wrk sends it."""

    kind: str
    payload: Payload
    data: bytes
    content_type: str
    header_length: int | None  # Inference-Header-Content-Length, for binary OIP bodies
    file: Path

    def path(self, app: str) -> str:
        if app == "trivial":
            return "/"
        return "/predict" if self.kind == "predict" else f"/v2/models/{MODEL}/infer"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(self.header_length)
        return headers


def sines(payload: Payload) -> npt.NDArray[np.float64]:
    """(seq, batch, 1) sines, one phase and sampling step per sequence (what a JSON client would send)."""
    t = np.arange(payload.seq, dtype=np.float64)[:, None]
    phase = np.linspace(0.0, 2 * np.pi, payload.batch, endpoint=False)[None, :]
    step = np.geomspace(0.05, 1.0, payload.batch)[None, :]
    return np.sin(phase + step * t)[:, :, None]


def make_bodies(payload: Payload, input_name: str, folder: Path) -> dict[str, Body]:
    x = sines(payload)
    x32 = x.astype(np.float32)
    shape = list(x.shape)
    bodies: dict[str, tuple[bytes, str, int | None]] = {
        "predict": (orjson.dumps({"inputs": x.tolist()}), "application/json", None),
        "oip_json": (
            orjson.dumps(
                {"inputs": [{"name": input_name, "shape": shape, "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
            ),
            "application/json",
            None,
        ),
    }
    raw = x32.astype("<f4").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {"name": input_name, "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )
    bodies["oip_binary"] = (header + raw, "application/octet-stream", len(header))
    result = {}
    for kind, (data, content_type, header_length) in bodies.items():
        file = folder / f"{payload.name}-{kind}.body"
        file.write_bytes(data)
        result[kind] = Body(kind, payload, data, content_type, header_length, file)
    return result


def decode_answer(kind: str, content: bytes, headers: Mapping[str, str]) -> npt.NDArray[np.float32]:
    """The output tensor of a 200 answer of `kind`, shaped as the server says."""
    if kind == "predict":
        return np.asarray(orjson.loads(content)["outputs"], dtype=np.float32)
    if kind == "oip_json":
        tensor = orjson.loads(content)["outputs"][0]
        return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    length = int(headers["inference-header-content-length"])
    tensor = orjson.loads(content[:length])["outputs"][0]
    size = tensor["parameters"]["binary_data_size"]
    raw = content[length:]
    if len(raw) != size:
        raise ValueError(f"binary_data_size {size} but {len(raw)} bytes follow the header")
    return np.frombuffer(raw, dtype="<f4").reshape(tensor["shape"])
