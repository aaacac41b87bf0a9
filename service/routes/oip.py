"""The Open Inference Protocol (KServe V2) over HTTP, JSON and binary tensor data."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request, Response

import model_store
from service.deps import RuntimeDep
from service.errors import InvalidInputError, NotReadyError
from service.oip import HEADER_LENGTH_HEADER, decode_infer_request, encode_infer_response, parse_header_length
from service.predictor import ServedModel
from service.responses import json_response
from service.runtime import Runtime
from service.tensors import brief

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "pytorch_torchscript"

INFER_BODY: dict[str, Any] = {
    "required": True,
    "description": "an OIP inference request (JSON), or with Inference-Header-Content-Length a JSON header "
    "followed by raw little-endian tensor bytes (binary tensor data extension)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object"},
                    "inputs": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "shape", "datatype"],
                            "properties": {
                                "name": {"type": "string"},
                                "shape": {"type": "array", "items": {"type": "integer"}},
                                "datatype": {"type": "string", "enum": ["FP32", "FP64"]},
                                "parameters": {"type": "object"},
                                "data": {"type": "array"},
                            },
                        },
                    },
                    "outputs": {"type": "array", "items": {"type": "object"}},
                },
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _server_version() -> str:
    try:
        return version("lstm-service")
    except PackageNotFoundError:
        return "0"


def _parse_version(raw: str) -> int | str:
    """A version number, or an alias (any other valid name); a numeric string is always a version."""
    if model_store.is_version_text(raw):
        return model_store.check_version(int(raw))
    try:
        return model_store.check_name(raw, "alias")
    except model_store.InvalidNameError:
        raise InvalidInputError(
            f"model version {brief(raw)} is neither a positive integer nor an alias name ({model_store.NAME_PATTERN})"
        ) from None


def _metadata(runtime: Runtime, name: str, version: int | str | None) -> dict[str, Any]:
    versions = runtime.store.versions(name)
    if not versions:
        raise model_store.ModelNotFoundError(f"model {name!r} not found")
    # What this worker serves, and aliases as it last read them: metadata agrees with inference (and a
    # damaged alias file does not break a client that reads metadata before it infers).
    served = runtime.predictor.current(name) if version is None else None
    if served is not None:
        manifest = served.manifest
    elif version is None:
        manifest = runtime.store.manifest(name, runtime.store.resolve(name))
    else:
        manifest = runtime.store.manifest(name, runtime.predictor.version_of(name, version))
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [spec.to_dict() for spec in manifest.inputs],
        "outputs": [spec.to_dict() for spec in manifest.outputs],
    }


async def _infer(request: Request, runtime: Runtime, name: str, version: int | str | None) -> Response:
    body = await request.body()  # BodyLimitMiddleware bounds it
    header_length = parse_header_length(request.headers.get(HEADER_LENGTH_HEADER))
    served: ServedModel = await runtime.model_for(name, version)
    decoded = decode_infer_request(
        body,
        header_length,
        input_size=served.input_size,
        max_elements=runtime.settings.max_elements,
    )
    output = await runtime.infer(served, decoded.tensor)
    content, headers = encode_infer_response(
        model_name=served.name,
        model_version=str(served.version),
        request_id=decoded.id,
        output=output,
        binary=decoded.output_binary,
    )
    return Response(content, headers=headers)


@router.get("")
async def server_metadata() -> dict[str, Any]:
    """Server name, version and the protocol extensions it supports."""
    return {"name": "lstm-service", "version": _server_version(), "extensions": EXTENSIONS}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    """200 while the process is up."""
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "no model loaded yet"}})
async def ready(runtime: RuntimeDep) -> Response:
    """200 once a model is loaded, else 503."""
    if not runtime.predictor.ready:
        raise NotReadyError(runtime.not_ready_message())
    return json_response({"ready": True})


@router.get("/models/{name}")
async def model_metadata(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    """The model's versions, input and output tensors."""
    return _metadata(runtime, name, None)


@router.get("/models/{name}/versions/{model_version}")
async def model_version_metadata(name: str, model_version: str, runtime: RuntimeDep) -> dict[str, Any]:
    """One version's input and output tensors; `model_version` is a number or an alias."""
    return _metadata(runtime, name, _parse_version(model_version))


async def _ready(runtime: Runtime, name: str, version: int | str | None) -> Response:
    await runtime.model_for(name, version)  # 404 unknown, 503 empty store; loads a named version
    return json_response({"name": name, "ready": True})


@router.get("/models/{name}/ready")
async def model_ready(name: str, runtime: RuntimeDep) -> Response:
    """200 when the model can answer."""
    return await _ready(runtime, name, None)


@router.get("/models/{name}/versions/{model_version}/ready")
async def model_version_ready(name: str, model_version: str, runtime: RuntimeDep) -> Response:
    """200 when that version (a number or an alias) can answer."""
    return await _ready(runtime, name, _parse_version(model_version))


@router.post("/models/{name}/infer", openapi_extra={"requestBody": INFER_BODY})
async def infer(name: str, request: Request, runtime: RuntimeDep) -> Response:
    """Inference on the serving version (JSON or binary tensor data)."""
    return await _infer(request, runtime, name, None)


@router.post("/models/{name}/versions/{model_version}/infer", openapi_extra={"requestBody": INFER_BODY})
async def infer_version(name: str, model_version: str, request: Request, runtime: RuntimeDep) -> Response:
    """Inference on one version, a number or an alias (JSON or binary tensor data)."""
    return await _infer(request, runtime, name, _parse_version(model_version))
