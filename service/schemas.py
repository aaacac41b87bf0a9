"""Pydantic models of the JSON envelopes the routes answer, and the error body every 4xx/5xx carries.

Tensors are not validated through these: /predict and OIP inference parse and encode them with orjson and
numpy, and the answer models here document those bodies for OpenAPI. The OIP request header has models
that validate it too: service/oip_header.py.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import model_store

# Statuses any route may answer whatever it does: a body over the limit, a wrong content type, a body that
# is not what the route expects, the server's own trouble (a failing store, a full disk).
COMMON_ERRORS: tuple[int, ...] = (413, 415, 422, 500, 503, 507)


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: str = Field(description="what went wrong and what was expected, in one sentence")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` entries declaring `statuses` (and COMMON_ERRORS) with the error body."""
    return {
        status: {"model": ErrorBody, "description": HTTPStatus(status).phrase}
        for status in sorted({*statuses, *COMMON_ERRORS})
    }


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` written in place, for an `openapi_extra` request body (which
    FastAPI copies as is, so a `#/$defs/...` reference there would point nowhere in the document)."""
    schema = model.model_json_schema()
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


# ---- health and readiness --------------------------------------------------------------------------------


class Liveness(BaseModel):
    """GET /healthz."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """GET /readyz once a model is loaded: the version this worker serves of each model."""

    status: Literal["ready"] = "ready"
    serving: dict[str, int]


class NotReady(BaseModel):
    """GET /readyz before any model is loaded, and how to get one."""

    status: Literal["not ready"] = "not ready"
    error: str


# ---- the Open Inference Protocol -------------------------------------------------------------------------


class ServerMetadata(BaseModel):
    """GET /v2."""

    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    """GET /v2/health/live."""

    live: bool


class ServerReady(BaseModel):
    """GET /v2/health/ready."""

    ready: bool


class ModelReady(BaseModel):
    """GET /v2/models/{name}[/versions/{version}]/ready."""

    name: str
    ready: bool


class TensorMetadata(BaseModel):
    """One tensor a model takes or gives; -1 marks a free dimension."""

    name: str
    datatype: str
    shape: list[int]

    @classmethod
    def of(cls, spec: model_store.TensorSpec) -> TensorMetadata:
        return cls(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))


class ModelMetadata(BaseModel):
    """GET /v2/models/{name}[/versions/{version}]: the model's versions, input and output tensors."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InferOutput(BaseModel):
    """The one output tensor of an OIP answer: `data` in JSON, or `parameters.binary_data_size` raw bytes."""

    name: str
    datatype: str
    shape: list[int]
    data: list[float | None] | None = None
    parameters: dict[str, Any] | None = None


class InferResponseHeader(BaseModel):
    """The JSON of an OIP inference answer (the header, with the binary extension). Documents the answer,
    which service/oip.py writes with orjson straight from the numpy array."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="with a sequence request: the echoed sequence_id (docs/sequences.md)"
    )
    outputs: list[InferOutput]


class ModelConfigTensor(BaseModel):
    """An input or output of GET /v2/models/{name}/config, as Triton's model_config.proto names it."""

    name: str
    data_type: str = Field(description="TYPE_FP32, ...")
    dims: list[int] = Field(description="the whole shape, -1 for a free dimension (max_batch_size is 0)")


class ModelConfigBody(BaseModel):
    """GET /v2/models/{name}[/versions/{version}]/config: Triton's ModelConfig fields that describe the model."""

    name: str
    platform: str
    backend: str
    version_policy: dict[str, dict[str, Any]] = Field(description='{"all": {}}: any version can be asked for')
    max_batch_size: int = Field(description="0: batch is the middle dimension of the tensors' dims")
    input: list[ModelConfigTensor]
    output: list[ModelConfigTensor]


class StatisticDuration(BaseModel):
    """A count and cumulative nanoseconds."""

    count: int
    ns: int


class InferStatistics(BaseModel):
    """Triton's inference_stats of one model version."""

    success: StatisticDuration
    fail: StatisticDuration
    queue: StatisticDuration
    compute_input: StatisticDuration
    compute_infer: StatisticDuration
    compute_output: StatisticDuration
    cache_hit: StatisticDuration
    cache_miss: StatisticDuration


class ModelStatistics(BaseModel):
    """One model version's statistics in the worker that answers."""

    name: str
    version: str
    last_inference: int = Field(description="ms since the epoch; 0: never")
    inference_count: int = Field(description="sequences (batch columns) inferred")
    execution_count: int = Field(description="requests run")
    inference_stats: InferStatistics
    batch_stats: list[dict[str, Any]] = Field(default_factory=list)


class ModelStatisticsBody(BaseModel):
    """GET /v2/models[/{name}[/versions/{version}]]/stats."""

    model_stats: list[ModelStatistics]


class RepositoryIndexRequest(BaseModel):
    """POST /v2/repository/index body (optional)."""

    ready: bool = Field(False, description="only the versions this worker has loaded")


class RepositoryChange(BaseModel):
    """POST /v2/repository/models/{name}/load (and unload): an empty object once done."""


class RepositoryModel(BaseModel):
    """One version in POST /v2/repository/index."""

    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE"]
    reason: str


# ---- /predict --------------------------------------------------------------------------------------------

DEFAULT_MODEL = "lstm"
Step = Annotated[list[float], Field(min_length=1, max_length=1)]  # one sequence's value at one time step


class PredictRequest(BaseModel):
    """Body of POST /predict. Documents the body, which service/tensors.py parses with orjson and numpy
    (per-element validation of a 32 000-number tensor would cost far more than the model)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": [[[0.0]], [[0.0998]], [[0.1987]], [[0.2955]]], "model": "lstm"}]},
    )

    inputs: list[Annotated[list[Step], Field(min_length=1)]] = Field(
        min_length=1, description="sine values shaped (seq, batch, 1), time-major"
    )
    model: str = DEFAULT_MODEL
    version: int | None = Field(None, ge=1, description="a version number; the serving version when left out")


class PredictResponse(BaseModel):
    """POST /predict: the cosines shaped (seq, batch, 1) like the inputs. Documents the answer, which
    service/tensors.py writes with orjson straight from the numpy array."""

    outputs: list[list[list[float | None]]]
    model: str
    version: int


# ---- the model store -------------------------------------------------------------------------------------


class VersionSummary(BaseModel):
    """One version in a model listing."""

    version: int
    created_at: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    sha256: str
    sequences: bool = Field(
        description="whether the version serves stateful sequences (exported with its state-carrying method); "
        "docs/sequences.md"
    )
    onnx: bool = Field(False, description="whether the version has an ONNX file for ONNX Runtime (docs/runtimes.md)")


class SequenceSupportInfo(BaseModel):
    """How a version carries the LSTM's state between the chunks of a sequence (its manifest's `sequence`)."""

    method: str
    num_layers: int
    hidden_size: int
    parity_max_abs_diff: float = Field(description="worst |chunked - one-shot| output measured at export")


class OnnxExportInfo(BaseModel):
    """A version's ONNX files (its manifest's `onnx`), or why it has none."""

    file: str | None = Field(description="runs forward: input -> output; none when the export failed")
    sha256: str | None
    state_file: str | None = Field(None, description="runs the state-carrying method: input, h0, c0 -> output, hn, cn")
    state_sha256: str | None = None
    parity_max_abs_diff: float | None = Field(None, description="worst |ONNX - model| output measured at export")
    exporter: str = ""
    error: str | None = Field(None, description="why the export (or its state-carrying part) failed")


class Pt2ExportInfo(BaseModel):
    """A version's torch.export `.pt2` files (its manifest's `pt2`), or why it has none; not loaded for serving."""

    file: str | None = Field(description="the ExportedProgram of forward; none when the export failed or was skipped")
    sha256: str | None
    state_file: str | None = Field(None, description="the ExportedProgram of the state-carrying method")
    state_sha256: str | None = None
    parity_max_abs_diff: float | None = Field(None, description="worst |.pt2 - model| output measured at export")
    exporter: str = ""
    error: str | None = Field(None, description="why the export failed, or that it was skipped (--no-pt2)")


class LoadError(BaseModel):
    """The last version of a model that this worker could not load, and why."""

    version: int
    error: str


class ModelSummary(BaseModel):
    """One model in GET /models."""

    name: str
    aliases: dict[str, int]
    serving_version: int | None
    runtime: Literal["torchscript", "onnxruntime"] | None = Field(  # service.runtimes.RuntimeName
        None, description="what runs the serving version in this worker (LSTM_RUNTIME; docs/runtimes.md)"
    )
    runtime_note: str | None = Field(
        None, description="why that runtime, when there is more to say (e.g. why ONNX Runtime does not serve it)"
    )
    load_error: LoadError | None
    damaged: list[str] = Field(description="why parts of this model cannot be used")
    versions: list[VersionSummary]


class DamagedEntry(BaseModel):
    """An entry of the store named like a model that cannot be used, and why."""

    name: str
    error: str


class ModelListing(BaseModel):
    """GET /models."""

    models: list[ModelSummary]
    damaged: list[DamagedEntry]


class VersionManifest(BaseModel):
    """GET /models/{name}/versions/{version}: the version's manifest as the store keeps it."""

    model_config = ConfigDict(extra="allow")  # a newer manifest's fields pass through

    name: str
    version: int
    created_at: str
    sha256: str
    torch_version: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    params: dict[str, Any]
    metrics: dict[str, Any]
    data: dict[str, Any]
    files: list[str]
    format: str = Field(description="torchscript (model.pt serves), or onnx: an imported ONNX model without model.pt")
    sequence: SequenceSupportInfo | None = Field(
        None, description="none for versions exported before sequence support (one-shot requests only)"
    )
    onnx: OnnxExportInfo | None = Field(
        None, description="none for versions exported before ONNX files (served by TorchScript; docs/runtimes.md)"
    )
    pt2: Pt2ExportInfo | None = Field(
        None, description="none for versions exported before .pt2 files, and imported ones (docs/runtimes.md)"
    )


class ImportedVersion(BaseModel):
    """POST /models/{name}/versions: the version a model file became, whether it was promoted and why."""

    model: str
    version: int
    promoted: bool
    promotion_reason: str
    manifest: VersionManifest


class AliasUpdate(BaseModel):
    """Body of PUT /models/{name}/aliases/{alias}."""

    version: int = Field(ge=1, le=model_store.MAX_VERSION, description="the version the alias points at")


class AliasSet(BaseModel):
    """The answer to PUT /models/{name}/aliases/{alias}."""

    model: str
    alias: str
    version: int
    serving_version: int | None = Field(description="what this worker serves now")
    repaired: str | None = Field(description="the damage of the alias file that was replaced, if it was")
