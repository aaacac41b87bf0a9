"""The Open Inference Protocol (KServe V2) codec with the binary tensor extension: request bytes to numpy and back."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from service.errors import InvalidInputError, PayloadTooLargeError
from service.oip_header import OUTPUT_NAME, RequestedOutput, validate_header
from service.tensors import brief, check_finite, flatten, json_kind, numbers_to_float32, parse_json_object, shown

HEADER_LENGTH_HEADER: Final = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE: Final = "application/json"
BINARY_CONTENT_TYPE: Final = "application/octet-stream"

# Explicit little-endian: the binary extension fixes the byte order whatever the host's is.
_DTYPES: Final[dict[str, np.dtype[Any]]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_UNSUPPORTED_PARAMETERS: Final = ("shared_memory_region", "classification")
_HEADER_LENGTH_PATTERN: Final = re.compile(r"\s*(-?[0-9]{1,19})\s*")


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays with == is elementwise, not a bool
class InferRequest:
    """A decoded inference request for the one-input model."""

    id: str | None
    input_name: str
    tensor: npt.NDArray[np.float32]  # C-contiguous, writable, shape (seq, batch, input_size)
    output_binary: bool
    output_names: tuple[str, ...]  # empty means all outputs
    parameters: dict[str, Any]  # the request-level parameters as sent (e.g. sequence_id, sequence_start)


def parse_header_length(value: str | None) -> int | None:
    """The `Inference-Header-Content-Length` header as an int (None when absent); 422 when it is not an integer."""
    if value is None:
        return None
    match = _HEADER_LENGTH_PATTERN.fullmatch(value)
    if match is None:
        raise InvalidInputError(
            f"{HEADER_LENGTH_HEADER} is {brief(value)} but a byte count (a non-negative integer) was expected"
        )
    return int(match.group(1))


@dataclass(frozen=True)
class CheckedHeader:
    """An inference request's header, validated against the model and the limits; its tensor not yet read.

    What the JSON path (decode_infer_request) and the gRPC one (service/grpc_codec.py) share: each then reads the
    tensor from where its transport carries it."""

    id: str | None
    name: str  # the input's
    datatype: str
    dtype: np.dtype[Any]
    shape: list[int]
    count: int  # elements of `shape`
    input_parameters: dict[str, Any]
    request_parameters: dict[str, Any]
    output_binary: bool
    output_names: tuple[str, ...]
    data: list[Any] | None  # the JSON 'data' as sent (not walked yet)

    def request(self, tensor: npt.NDArray[np.float32]) -> InferRequest:
        """The decoded request once its tensor is read."""
        return InferRequest(
            id=self.id,
            input_name=self.name,
            tensor=tensor,
            output_binary=self.output_binary,
            output_names=self.output_names,
            parameters=self.request_parameters,
        )


def check_header(request: dict[str, Any], *, input_size: int, max_elements: int) -> CheckedHeader:
    """Validate an inference request header (the JSON object, or its gRPC twin as the same dict): its structure,
    the shape against the model, the element limit, parameters and requested outputs."""
    header = validate_header(request, input_size)
    spec = header.inputs[0]
    name, datatype = spec.name, spec.datatype
    shape = _shape(spec.shape, name, input_size)
    count = math.prod(shape)  # Python ints: no overflow, and nothing is allocated from it yet
    if count > max_elements:
        raise PayloadTooLargeError(
            f"input {name!r} has shape {shape} = {count} elements but at most {max_elements} are accepted"
        )
    request_parameters = header.parameters or {}
    input_parameters = spec.parameters or {}
    _reject_unsupported(input_parameters, f"input {name!r}")
    output_binary, output_names = _requested_outputs(header.outputs, request_parameters)
    return CheckedHeader(
        id=header.id,
        name=name,
        datatype=datatype,
        dtype=_DTYPES[datatype],
        shape=shape,
        count=count,
        input_parameters=input_parameters,
        request_parameters=request_parameters,
        output_binary=output_binary,
        output_names=output_names,
        data=spec.data,
    )


def decode_infer_request(body: bytes, header_length: int | None, *, input_size: int, max_elements: int) -> InferRequest:
    """Parse and validate a V2 inference request; every problem raises InvalidInputError or PayloadTooLargeError."""
    header_bytes, binary = _split_body(body, header_length)
    # The header's structure and JSON types, then what needs the model or sizes.
    checked = check_header(parse_json_object(header_bytes), input_size=input_size, max_elements=max_elements)
    name, spec_data = checked.name, checked.data
    if "binary_data_size" in checked.input_parameters:
        if spec_data is not None:
            raise InvalidInputError(
                f"input {name!r} has both 'data' and parameters.binary_data_size but exactly one of them was expected"
            )
        tensor = _binary_tensor(checked.input_parameters["binary_data_size"], binary, header_length, checked)
    else:
        if len(binary):
            raise InvalidInputError(
                f"the body has {len(binary)} bytes after the {header_length}-byte JSON header but no input declares "
                "parameters.binary_data_size; binary data is expected only for an input that declares its size"
            )
        tensor = _json_tensor(spec_data, name, checked.shape, checked.count)
    return checked.request(tensor)


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    output: npt.NDArray[Any],
    binary: bool,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A V2 inference response for the model's one output, as (body, HTTP headers to send with it); `parameters`
    are the response-level parameters (e.g. the echoed sequence_id)."""
    array = np.ascontiguousarray(output, dtype=np.float32)
    tensor: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(array.shape)}
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    if parameters:
        response["parameters"] = parameters
    response["outputs"] = [tensor]
    if binary:
        raw = array.astype("<f4", copy=False).tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        header = orjson.dumps(response)
        return header + raw, {HEADER_LENGTH_HEADER: str(len(header)), "Content-Type": BINARY_CONTENT_TYPE}
    # Serialising the ndarray directly is many times faster than tolist(); NaN/inf become null.
    tensor["data"] = array.reshape(-1)
    return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY), {"Content-Type": JSON_CONTENT_TYPE}


def encode_error(message: str) -> bytes:
    """The V2 error body: {"error": message}."""
    return orjson.dumps({"error": message})


def _split_body(body: bytes, header_length: int | None) -> tuple[memoryview, memoryview]:
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    if header_length < 0:
        raise InvalidInputError(
            f"{HEADER_LENGTH_HEADER} is {header_length} but a non-negative byte count of the JSON header was expected"
        )
    if header_length > len(body):
        raise InvalidInputError(
            f"{HEADER_LENGTH_HEADER} is {header_length} but the body has only {len(body)} bytes; "
            "a length no larger than the body was expected"
        )
    return view[:header_length], view[header_length:]


def _reject_unsupported(parameters: dict[str, Any], where: str) -> None:
    for key in _UNSUPPORTED_PARAMETERS:
        if key in parameters:
            raise InvalidInputError(
                f"{where} has parameter {key!r}, which this server does not support; "
                "plain JSON or binary tensor data was expected"
            )


def _shape(value: list[int], name: str, input_size: int) -> list[int]:
    expected = f"3 dimensions (seq, batch, {input_size})"
    if len(value) != 3:
        raise InvalidInputError(f"input {name!r} has shape {brief(value)} but {expected} were expected")
    if not all(dim > 0 for dim in value):
        raise InvalidInputError(
            f"input {name!r} has shape {value} but every dimension must be positive: {expected}, seq and batch > 0"
        )
    if value[2] != input_size:
        raise InvalidInputError(
            f"input {name!r} has shape {value} but its last dimension must be the model's input size {input_size}"
        )
    return value


def _requested_outputs(
    outputs: list[RequestedOutput] | None, request_parameters: dict[str, Any]
) -> tuple[bool, tuple[str, ...]]:
    binary = request_parameters.get("binary_data_output", False)
    if not isinstance(binary, bool):
        raise InvalidInputError(
            f"request parameter 'binary_data_output' is {json_kind(binary)} but a boolean was expected"
        )
    names: list[str] = []
    for item in outputs or ():
        name = item.name
        if name != OUTPUT_NAME:
            raise InvalidInputError(
                f"requested output {brief(name)} does not exist; the model has one output named {OUTPUT_NAME!r}"
            )
        if name in names:
            raise InvalidInputError(f"output {name!r} is requested twice but each output may be requested once")
        names.append(name)
        parameters = item.parameters or {}
        _reject_unsupported(parameters, f"requested output {name!r}")
        # Per the binary extension, an output's own binary_data overrides the request-wide binary_data_output.
        if "binary_data" in parameters:
            binary = parameters["binary_data"]
            if not isinstance(binary, bool):
                raise InvalidInputError(
                    f"requested output {name!r} parameter 'binary_data' is {json_kind(binary)} "
                    "but a boolean was expected"
                )
    return binary, tuple(names)


def _binary_tensor(
    size: object, binary: memoryview, header_length: int | None, checked: CheckedHeader
) -> npt.NDArray[np.float32]:
    name = checked.name
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInputError(
            f"input {name!r} has parameters.binary_data_size {shown(size)} but a non-negative byte count was expected"
        )
    if header_length is None:
        raise InvalidInputError(
            f"input {name!r} declares parameters.binary_data_size but the request has no {HEADER_LENGTH_HEADER} "
            "header; that header with the byte length of the JSON part was expected"
        )
    needed = checked.count * checked.dtype.itemsize
    if size != needed:
        raise InvalidInputError(f"input {name!r} has parameters.binary_data_size {size} but {needs(checked)}")
    if len(binary) != size:
        raise InvalidInputError(
            f"the body has {len(binary)} bytes after the {header_length}-byte JSON header but input {name!r} "
            f"declares parameters.binary_data_size {size}; exactly that many bytes were expected"
        )
    return tensor_from_bytes(binary, checked)


def needs(checked: CheckedHeader) -> str:
    """What the input's raw bytes must be, for a message: "shape [2, 3, 1] of FP32 needs 24 bytes (...)"."""
    itemsize = checked.dtype.itemsize
    return (
        f"shape {checked.shape} of {checked.datatype} needs {checked.count * itemsize} bytes "
        f"({checked.count} elements of {itemsize} bytes)"
    )


def tensor_from_bytes(raw: bytes | memoryview, checked: CheckedHeader) -> npt.NDArray[np.float32]:
    """The input's little-endian bytes (already checked to be `count` elements) as a finite float32 tensor."""
    # astype always copies: the result is aligned, native-endian and writable (frombuffer's view of bytes is not).
    with np.errstate(over="ignore"):
        tensor = np.frombuffer(raw, dtype=checked.dtype).astype(np.float32).reshape(checked.shape)
    check_finite(tensor, f"input {checked.name!r}")
    return tensor


def _json_tensor(data: object, name: str, shape: list[int], count: int) -> npt.NDArray[np.float32]:
    if data is None:
        raise InvalidInputError(
            f"input {name!r} has neither 'data' nor parameters.binary_data_size but one of them was expected"
        )
    if not isinstance(data, list):
        raise InvalidInputError(f"input {name!r} 'data' is {json_kind(data)} but a list of numbers was expected")
    expectation = f"{count} numbers, as a flat list or as lists nested as shape {shape}"
    if data and isinstance(data[0], list):
        leaves = flatten(data, shape, f"input {name!r} data", expectation)
    elif len(data) == count:
        leaves = data
    else:
        raise InvalidInputError(f"input {name!r} data has {len(data)} elements but {expectation} was expected")
    return numbers_to_float32(leaves, data, shape, f"input {name!r} data", expectation)
