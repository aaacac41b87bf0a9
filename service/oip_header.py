"""The OIP inference request header as pydantic models, and the first problem pydantic finds worded as one sentence.

The models check the header's structure and JSON types (strict: no "1" for 1, no true for 1, no 2.0 for a
dimension), so the same declaration validates requests and documents them in OpenAPI. Tensor `data` is not
walked here: service/oip.py hands it to numpy. What depends on the model or on other fields (the shape's
size, binary byte counts, output names, limits) is checked there after validation.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, ValidationError
from pydantic_core import ErrorDetails

from service.errors import InvalidInputError
from service.tensors import brief, json_kind, shown

MAX_NAME_CHARS: Final = 256
OUTPUT_NAME: Final = "output"
Datatype = Literal["FP32", "FP64"]
DATATYPES: Final = get_args(Datatype)

# Strict JSON types; unknown keys are ignored as before (clients such as kserve's add their own).
_STRICT = ConfigDict(strict=True, extra="ignore")


class InferInput(BaseModel):
    """One input tensor of an OIP request; `data` is read by numpy, not validated here."""

    model_config = _STRICT

    name: str = Field(max_length=MAX_NAME_CHARS)  # quoted in every later message: keep those small
    datatype: Datatype
    shape: list[int]
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size with the binary extension")
    # Not walked (SkipValidation): the very list the client sent, for numpy to read.
    data: SkipValidation[list[Any] | None] = Field(None, description="the numbers, flat or nested as `shape`")


class RequestedOutput(BaseModel):
    """An output an OIP request asks for."""

    model_config = _STRICT

    name: str
    parameters: dict[str, Any] | None = Field(None, description="binary_data: true for raw bytes")


class InferRequestHeader(BaseModel):
    """The JSON of an OIP inference request (the header, with the binary extension)."""

    model_config = _STRICT

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None,
        description="binary_data_output: true for raw output bytes; sequence_id, sequence_start, sequence_end "
        "for a stateful sequence (docs/sequences.md)",
    )
    inputs: list[InferInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None


def validate_header(request: dict[str, Any], input_size: int) -> InferRequestHeader:
    """The parsed JSON header as a model; InvalidInputError worded from pydantic's first error otherwise."""
    try:
        return InferRequestHeader.model_validate(request)
    except ValidationError as exc:
        raise InvalidInputError(_sentence(exc.errors()[0], request, input_size)) from None


def _input_name(request: dict[str, Any]) -> str:
    """The input's name as sent, for messages about its other fields (already checked to be a string)."""
    inputs = request.get("inputs")
    spec = inputs[0] if isinstance(inputs, list) and inputs else None
    name = spec.get("name") if isinstance(spec, dict) else None
    return name if isinstance(name, str) else "?"


def _output_name(request: dict[str, Any], index: int) -> str:
    item = request["outputs"][index]
    return str(item.get("name"))


def _sentence(error: ErrorDetails, request: dict[str, Any], input_size: int) -> str:
    """One error of InferRequestHeader as "<where> is <what was sent> but <what was expected> was expected"."""
    loc, kind = error["loc"], error["type"]
    value = None if kind == "missing" else error["input"]
    sent = json_kind(value)
    match loc:
        case ("id",):
            return f"request 'id' is {sent} but a string was expected"
        case ("parameters",):
            return f"request 'parameters' is {sent} but a JSON object was expected"
        case ("inputs",) if kind == "too_long":
            return f"request has {len(request['inputs'])} inputs but the model takes exactly 1 input tensor"
        case ("inputs",):
            what = "an empty list" if kind == "too_short" else sent
            return f"request 'inputs' is {what} but a non-empty list of input tensor objects was expected"
        case ("inputs", int()):
            return f"request input is {sent} but a JSON object was expected"
        case ("inputs", int(), "name") if kind == "string_too_long":
            return f"input 'name' has {len(str(value))} characters but at most {MAX_NAME_CHARS} were expected"
        case ("inputs", int(), "name"):
            return f"input 'name' is {sent} but a string was expected"
        case ("inputs", int(), "datatype"):
            accepted = " or ".join(DATATYPES)
            return f"input {_input_name(request)!r} datatype is {shown(value)} but {accepted} was expected"
        case ("inputs", int(), "shape"):
            return (
                f"input {_input_name(request)!r} shape is {shown(value)} but a list of 3 dimensions "
                f"(seq, batch, {input_size}) was expected"
            )
        case ("inputs", int(), "shape", int()):
            shape = request["inputs"][0]["shape"]
            return f"input {_input_name(request)!r} has shape {brief(shape)} but integer dimensions were expected"
        case ("inputs", int(), "parameters"):
            return f"input {_input_name(request)!r} 'parameters' is {sent} but a JSON object was expected"
        case ("outputs",):
            return f"request 'outputs' is {sent} but a list of output objects was expected"
        case ("outputs", int()):
            return f"a requested output is {sent} but a JSON object was expected"
        case ("outputs", int(), "name"):
            return f"requested output {shown(value)} does not exist; the model has one output named {OUTPUT_NAME!r}"
        case ("outputs", int() as index, "parameters"):
            output = _output_name(request, index)
            return f"requested output {output!r} 'parameters' is {sent} but a JSON object was expected"
    # Every field above has its sentence; this is for a field added to the models without one.
    where = ".".join(str(part) for part in loc)
    return f"request field {where!r} is {sent}: {error['msg']}"
