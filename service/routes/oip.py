"""The Open Inference Protocol (KServe V2) over HTTP, JSON and binary tensor data."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response

from service.dataplane import DataPlane, parse_version
from service.deps import AdminDep, DataPlaneDep, RepositoryDep
from service.oip import (
    HEADER_LENGTH_HEADER,
    InferRequest,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
)
from service.oip_header import InferRequestHeader
from service.schemas import (
    ErrorBody,
    InferResponseHeader,
    ModelConfigBody,
    ModelMetadata,
    ModelReady,
    ModelStatisticsBody,
    RepositoryChange,
    RepositoryIndexRequest,
    RepositoryModel,
    ServerLive,
    ServerMetadata,
    ServerReady,
    error_responses,
    inline_schema,
)
from service.sequence_params import SEQUENCE_ID, is_sequence_request, sequence_step_of

router = APIRouter(prefix="/v2", tags=["open inference protocol"], responses=error_responses())
MODEL_ERRORS = error_responses(404, 409)  # an unknown model or version, a damaged version
# and a body that ended early, a version that fails verification (or a sequence misuse), too many live sequences
INFER_ERRORS = error_responses(400, 404, 409, 429)
# No or a wrong token, an unknown model, a model that cannot be unloaded.
REPOSITORY_ERRORS = (401, 403, 404, 409)

# The body is decoded by service/oip.py: orjson, then the header's pydantic model (service/oip_header.py),
# then numpy for the tensor; FastAPI does not parse it, so the schema is given here.
INFER_BODY: dict[str, Any] = {
    "required": True,
    "description": "an OIP inference request (JSON), or with Inference-Header-Content-Length a JSON header "
    "followed by raw little-endian tensor bytes (binary tensor data extension)",
    "content": {
        "application/json": {"schema": inline_schema(InferRequestHeader)},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the output tensor: JSON, or with Inference-Header-Content-Length a JSON header followed "
        "by raw little-endian float32 bytes",
        "content": {
            "application/json": {"schema": inline_schema(InferResponseHeader)},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **INFER_ERRORS,
}


async def _infer(request: Request, dataplane: DataPlane, name: str, version: int | str | None) -> Response:
    body = await request.body()  # BodyLimitMiddleware bounds it
    header_length = parse_header_length(request.headers.get(HEADER_LENGTH_HEADER))
    served = await dataplane.model_for(name, version)
    decoded = decode_infer_request(
        body, header_length, input_size=served.input_size, max_elements=dataplane.max_elements
    )
    if decoded.parameters and is_sequence_request(decoded.parameters):
        return await _sequence_step(dataplane, name, version, decoded)
    output = await dataplane.infer(served, decoded.tensor)
    content, headers = encode_infer_response(
        model_name=served.name,
        model_version=str(served.version),
        request_id=decoded.id,
        output=output,
        binary=decoded.output_binary,
    )
    return Response(content, headers=headers)


async def _sequence_step(dataplane: DataPlane, name: str, version: int | str | None, decoded: InferRequest) -> Response:
    """A chunk of a stateful sequence (Triton's sequence_id, sequence_start, sequence_end; docs/sequences.md)."""
    step = sequence_step_of(
        name, version, decoded.parameters, decoded.tensor, max_id_length=dataplane.settings.sequence_id_max_length
    )
    result = await dataplane.sequence_step(step)
    content, headers = encode_infer_response(
        model_name=result.model,
        model_version=str(result.version),
        request_id=decoded.id,
        output=result.outputs,
        binary=decoded.output_binary,
        parameters={SEQUENCE_ID: result.sequence_id},
    )
    return Response(content, headers=headers)


@router.get("")
async def server_metadata(dataplane: DataPlaneDep) -> ServerMetadata:
    """Server name, version and the protocol extensions it supports."""
    return dataplane.server_metadata()


@router.get("/health/live")
async def live() -> ServerLive:
    """200 while the process is up."""
    return ServerLive(live=True)


@router.get("/health/ready", responses={503: {"model": ErrorBody, "description": "no model loaded yet"}})
async def ready(dataplane: DataPlaneDep) -> ServerReady:
    """200 once a model is loaded, else 503."""
    dataplane.check_ready()
    return ServerReady(ready=True)


# ---- statistics, model configuration and the repository extension (what tritonclient calls besides) -----
# Declared before /models/{name}: "stats" is a valid model name, and these paths must win.


@router.get("/models/stats")
async def all_statistics(dataplane: DataPlaneDep) -> ModelStatisticsBody:
    """Inference statistics of every model version this worker has run (counts, cumulative ns)."""
    return ModelStatisticsBody(model_stats=dataplane.model_statistics(None, None))


@router.get("/models/{name}/stats", responses=MODEL_ERRORS)
async def model_statistics(name: str, dataplane: DataPlaneDep) -> ModelStatisticsBody:
    """Inference statistics of the model's versions in this worker (zeros for its serving one before any)."""
    return ModelStatisticsBody(model_stats=dataplane.model_statistics(name, None))


@router.get("/models/{name}/versions/{model_version}/stats", responses=MODEL_ERRORS)
async def model_version_statistics(name: str, model_version: str, dataplane: DataPlaneDep) -> ModelStatisticsBody:
    """Inference statistics of one version (a number or an alias) in this worker."""
    return ModelStatisticsBody(model_stats=dataplane.model_statistics(name, parse_version(model_version)))


@router.get("/models/{name}/config", responses=MODEL_ERRORS)
async def model_config(name: str, dataplane: DataPlaneDep) -> ModelConfigBody:
    """The serving version's configuration, as Triton's ModelConfig names it."""
    return dataplane.model_config(name, None)


@router.get("/models/{name}/versions/{model_version}/config", responses=MODEL_ERRORS)
async def model_version_config(name: str, model_version: str, dataplane: DataPlaneDep) -> ModelConfigBody:
    """One version's configuration (a number or an alias)."""
    return dataplane.model_config(name, parse_version(model_version))


@router.post("/repository/index")
async def repository_index(
    repository: RepositoryDep, request: Annotated[RepositoryIndexRequest | None, Body()] = None
) -> list[RepositoryModel]:
    """Every version in the store: READY when this worker has it loaded, else UNAVAILABLE and why."""
    return await repository.index(request.ready if request is not None else False)


@router.post("/repository/models/{name}/load", dependencies=[AdminDep], responses=error_responses(*REPOSITORY_ERRORS))
async def repository_load(name: str, repository: RepositoryDep) -> RepositoryChange:
    """Read the store now and answer once the model serves here (every worker serves every model of the store)."""
    await repository.load(name)
    return RepositoryChange()


@router.post("/repository/models/{name}/unload", dependencies=[AdminDep], responses=error_responses(*REPOSITORY_ERRORS))
async def repository_unload(name: str, repository: RepositoryDep) -> RepositoryChange:
    """Refused with 409 for a stored model: this server serves every model of its store (see the message)."""
    await repository.unload(name)
    return RepositoryChange()


@router.get("/models/{name}", responses=MODEL_ERRORS)
async def model_metadata(name: str, dataplane: DataPlaneDep) -> ModelMetadata:
    """The model's versions, input and output tensors."""
    return dataplane.model_metadata(name, None)


@router.get("/models/{name}/versions/{model_version}", responses=MODEL_ERRORS)
async def model_version_metadata(name: str, model_version: str, dataplane: DataPlaneDep) -> ModelMetadata:
    """One version's input and output tensors; `model_version` is a number or an alias."""
    return dataplane.model_metadata(name, parse_version(model_version))


@router.get("/models/{name}/ready", responses=MODEL_ERRORS)
async def model_ready(name: str, dataplane: DataPlaneDep) -> ModelReady:
    """200 when the model can answer."""
    await dataplane.check_model_ready(name, None)
    return ModelReady(name=name, ready=True)


@router.get("/models/{name}/versions/{model_version}/ready", responses=MODEL_ERRORS)
async def model_version_ready(name: str, model_version: str, dataplane: DataPlaneDep) -> ModelReady:
    """200 when that version (a number or an alias) can answer."""
    await dataplane.check_model_ready(name, parse_version(model_version))
    return ModelReady(name=name, ready=True)


@router.post("/models/{name}/infer", openapi_extra={"requestBody": INFER_BODY}, responses=INFER_RESPONSES)
async def infer(name: str, request: Request, dataplane: DataPlaneDep) -> Response:
    """Inference on the serving version (JSON or binary tensor data)."""
    return await _infer(request, dataplane, name, None)


@router.post(
    "/models/{name}/versions/{model_version}/infer",
    openapi_extra={"requestBody": INFER_BODY},
    responses=INFER_RESPONSES,
)
async def infer_version(name: str, model_version: str, request: Request, dataplane: DataPlaneDep) -> Response:
    """Inference on one version, a number or an alias (JSON or binary tensor data)."""
    return await _infer(request, dataplane, name, parse_version(model_version))
