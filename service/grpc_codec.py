"""The Open Inference Protocol's gRPC messages <-> the values the data plane takes and gives.

A ModelInferRequest becomes the same InferRequest that the REST path decodes from JSON: its header is
turned into the JSON header's dict and checked by service/oip.py's `check_header` (so every rule and
message is the REST one), then the tensor is read from `raw_input_contents` (little-endian bytes, as the
binary extension's) or from the typed `contents` (fp32_contents for FP32, fp64_contents for FP64).
The output goes back as `raw_output_contents`, which tritonclient reads with `as_numpy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from service.dataplane import parse_version
from service.errors import InvalidInputError
from service.grpc_proto import inference_pb2 as pb
from service.oip import CheckedHeader, InferRequest, check_header, needs, tensor_from_bytes
from service.oip_header import OUTPUT_NAME
from service.schemas import ModelConfigBody, ModelMetadata, ModelStatistics, RepositoryModel, ServerMetadata

# The typed field that carries each accepted datatype's values.
CONTENTS_FIELD: Final = {"FP32": "fp32_contents", "FP64": "fp64_contents"}
_CONTENTS_FIELDS: Final = tuple(field.name for field in pb.InferTensorContents.DESCRIPTOR.fields)


def version_of(text: str) -> int | str | None:
    """A request's model_version: empty means the serving version, else a number or an alias."""
    return parse_version(text) if text else None


def parameter_value(parameter: pb.InferParameter) -> Any:
    """An InferParameter as the JSON value REST would carry (None when no choice is set)."""
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def parameters_of(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in parameters.items()}


def header_of(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The request's header as the JSON object a REST client would send (without the tensor's values)."""
    header: dict[str, Any] = {
        "inputs": [
            {
                # proto3 cannot tell an empty string from a missing one: both are "missing or null".
                "name": tensor.name or None,
                "datatype": tensor.datatype or None,
                "shape": list(tensor.shape),
                "parameters": parameters_of(tensor.parameters),
            }
            for tensor in request.inputs
        ]
    }
    if request.id:
        header["id"] = request.id
    if request.parameters:
        header["parameters"] = parameters_of(request.parameters)
    if request.outputs:
        header["outputs"] = [
            {"name": output.name, "parameters": parameters_of(output.parameters)} for output in request.outputs
        ]
    return header


def decode_model_infer(request: pb.ModelInferRequest, *, input_size: int, max_elements: int) -> InferRequest:
    """Validate a ModelInferRequest for the one-input model; every problem raises InvalidInputError or
    PayloadTooLargeError with the REST path's wording."""
    checked = check_header(header_of(request), input_size=input_size, max_elements=max_elements)
    name, raw = checked.name, request.raw_input_contents
    has_contents = request.inputs[0].HasField("contents")
    if len(raw) > 1:
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries but one per input (1, for input {name!r}) was expected"
        )
    if raw and has_contents:
        raise InvalidInputError(
            f"input {name!r} has both 'contents' and raw_input_contents but exactly one of them was expected"
        )
    if raw:
        if len(raw[0]) != checked.count * checked.dtype.itemsize:
            raise InvalidInputError(
                f"input {name!r} has {len(raw[0])} bytes of raw_input_contents but {needs(checked)}"
            )
        return checked.request(tensor_from_bytes(raw[0], checked))
    if not has_contents:
        raise InvalidInputError(
            f"input {name!r} has neither 'contents' nor raw_input_contents but one of them was expected"
        )
    return checked.request(_typed_tensor(request.inputs[0].contents, checked))


def _typed_tensor(contents: pb.InferTensorContents, checked: CheckedHeader) -> npt.NDArray[np.float32]:
    name, expected = checked.name, CONTENTS_FIELD[checked.datatype]
    for field in _CONTENTS_FIELDS:
        if field != expected and len(getattr(contents, field)):
            raise InvalidInputError(
                f"input {name!r} is {checked.datatype} but its contents has {field}; "
                f"its values were expected in contents.{expected}"
            )
    values = getattr(contents, expected)
    if len(values) != checked.count:
        raise InvalidInputError(
            f"input {name!r} contents.{expected} has {len(values)} elements but {checked.count} numbers "
            f"(shape {checked.shape}) were expected"
        )
    array = np.array(values, dtype=checked.dtype)
    # The bytes of the values, read like raw contents: one conversion and one finiteness check for both.
    return tensor_from_bytes(array.astype(checked.dtype.newbyteorder("<"), copy=False).tobytes(), checked)


def set_parameter(parameter: pb.InferParameter, value: str | int | bool) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    else:
        parameter.string_param = value


def encode_model_infer(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    output: npt.NDArray[Any],
    parameters: Mapping[str, str | int | bool] | None = None,
) -> pb.ModelInferResponse:
    """The model's one output as raw little-endian float32 bytes (raw_output_contents); `parameters` are the
    response's (a sequence's sequence_id)."""
    array = np.ascontiguousarray(output, dtype="<f4")
    response = pb.ModelInferResponse(
        model_name=model_name,
        model_version=model_version,
        id=request_id or "",
        raw_output_contents=[array.tobytes()],
    )
    response.outputs.add(name=OUTPUT_NAME, datatype="FP32", shape=array.shape)
    for key, value in (parameters or {}).items():
        set_parameter(response.parameters[key], value)
    return response


def server_metadata(metadata: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=metadata.name, version=metadata.version, extensions=metadata.extensions)


def model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    def tensors(specs: list[Any]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape) for t in specs]

    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=tensors(metadata.inputs),
        outputs=tensors(metadata.outputs),
    )


def model_config(config: ModelConfigBody) -> pb.ModelConfigResponse:
    answer = pb.ModelConfig(
        name=config.name, platform=config.platform, backend=config.backend, max_batch_size=config.max_batch_size
    )
    answer.version_policy.all.SetInParent()
    for tensor in config.input:
        answer.input.add(name=tensor.name, data_type=pb.DataType.Value(tensor.data_type), dims=tensor.dims)
    for tensor in config.output:
        answer.output.add(name=tensor.name, data_type=pb.DataType.Value(tensor.data_type), dims=tensor.dims)
    return pb.ModelConfigResponse(config=answer)


def model_statistics(found: list[ModelStatistics]) -> pb.ModelStatisticsResponse:
    response = pb.ModelStatisticsResponse()
    for stats in found:
        entry = response.model_stats.add(
            name=stats.name,
            version=stats.version,
            last_inference=stats.last_inference,
            inference_count=stats.inference_count,
            execution_count=stats.execution_count,
        )
        for field, duration in stats.inference_stats:
            target = getattr(entry.inference_stats, field)
            target.count, target.ns = duration.count, duration.ns
    return response


def repository_index(models: list[RepositoryModel]) -> pb.RepositoryIndexResponse:
    response = pb.RepositoryIndexResponse()
    for model in models:
        response.models.add(name=model.name, version=model.version, state=model.state, reason=model.reason)
    return response
