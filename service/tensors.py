"""Tensors from JSON: nested or flat number lists to validated float32 arrays, shared by /predict and OIP.

Validation happens here, with numpy and C-speed list operations, before anything reaches torch:
rectangular, non-empty, numbers only (no strings, booleans or nulls), finite in float32, and
within the element limit, which is checked before anything is allocated.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from service.errors import InvalidInputError, PayloadTooLargeError
from service.flat_json import FlatTensor, split_predict_body

Float32Array = npt.NDArray[np.float32]

_repr = reprlib.Repr()  # bounded repr of client values for error messages (Repr's keyword form is 3.12+)
_repr.maxlist, _repr.maxdict, _repr.maxstring, _repr.maxother, _repr.maxlevel = 8, 4, 40, 40, 3
brief = _repr.repr


def shown(value: object) -> str:
    """A client value for an error message, saying so when it was missing."""
    return "missing or null" if value is None else brief(value)


def json_kind(value: object) -> str:
    """What a JSON value is, for error messages."""
    if value is None:
        return "missing or null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({brief(value)})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def parse_json_object(body: bytes | memoryview) -> dict[str, Any]:
    """Parse a request body that must be a JSON object."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(
            f"request body is not valid JSON: {error}; a JSON object (finite numbers only) was expected"
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidInputError(f"request body is {json_kind(parsed)} but a JSON object was expected")
    return parsed


def ragged_message(label: str, shape: list[int], expectation: str) -> str:
    return f"{label} is ragged or not nested as shape {shape} but {expectation} was expected"


def flatten(data: list[Any], shape: list[int], label: str, expectation: str) -> list[Any]:
    """The leaves of `data`, which must be nested exactly as `shape`; raises on ragged nesting.

    Level by level at C speed, several times faster than numpy walking the nested lists itself. A
    non-list with the right len() (a string or an object) flattens into strings, which the dtype
    check in numbers_to_float32 then rejects.
    """
    if len(data) != shape[0]:
        raise InvalidInputError(ragged_message(label, shape, expectation))
    level = data
    for size in shape[1:]:
        try:
            sizes = set(map(len, level))
        except TypeError:  # a number, boolean or null where a list belongs
            raise InvalidInputError(ragged_message(label, shape, expectation)) from None
        if sizes != {size}:
            raise InvalidInputError(ragged_message(label, shape, expectation))
        level = list(chain.from_iterable(level))
    return level


def _leaves(data: list[Any]) -> Iterator[object]:
    for item in data:
        if isinstance(item, list):
            yield from _leaves(item)
        else:
            yield item


def _non_number_message(data: list[Any], label: str) -> str:
    for flat_index, value in enumerate(_leaves(data)):
        if not isinstance(value, int | float) or isinstance(value, bool):
            found = "null" if value is None else json_kind(value)
            return f"{label} contains {found} at flat index {flat_index} but only numbers were expected"
    return f"{label} contains something other than numbers but only numbers were expected"


def _has_hidden_booleans(leaves: list[Any], array: npt.NDArray[Any]) -> bool:
    # numpy turns true/false mixed with numbers into 1/0, so only elements equal to 0 or 1 can have been booleans:
    # look those up when they are few, else scan every leaf's type at C speed.
    candidates = np.flatnonzero((array == 0) | (array == 1))
    if candidates.size * 8 <= len(leaves):
        return any(isinstance(leaves[index], bool) for index in candidates.tolist())
    return bool in set(map(type, leaves))


def check_finite(tensor: Float32Array, label: str) -> None:
    finite = np.isfinite(tensor)
    if not finite.all():
        flat_index = int(np.flatnonzero(~finite.reshape(-1))[0])
        raise InvalidInputError(
            f"{label} has a value that is NaN, infinite or beyond float32 range at flat index {flat_index} "
            "but finite float32 numbers were expected"
        )


def numbers_to_float32(
    leaves: list[Any], data: list[Any], shape: list[int], label: str, expectation: str
) -> Float32Array:
    """The flat `leaves` (of the client's `data`) as a finite float32 array shaped `shape`."""
    try:
        # No dtype on purpose: numpy would silently turn "1.5" into 1.5; inferring one exposes strings and nulls.
        array = np.asarray(leaves)
    except ValueError:
        raise InvalidInputError(ragged_message(label, shape, expectation)) from None
    if array.dtype.kind not in "fiu":
        raise InvalidInputError(_non_number_message(data, label))
    if array.ndim != 1:
        raise InvalidInputError(ragged_message(label, shape, expectation))
    if _has_hidden_booleans(leaves, array):
        raise InvalidInputError(_non_number_message(data, label))
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, rejected by check_finite
        tensor = array.astype(np.float32).reshape(shape)
    check_finite(tensor, label)
    return tensor


def nested_shape(data: list[Any]) -> list[int]:
    """The shape `data` claims, read down its first elements (flatten checks the rest agrees)."""
    shape = []
    level: Any = data
    while isinstance(level, list):
        shape.append(len(level))
        if not level:
            break
        level = level[0]
    return shape


def nested_to_array(nested: Any, *, label: str, features: int, max_elements: int) -> Float32Array:
    """Validate a (seq, batch, features) nested list, or a FlatTensor, and return it as float32."""
    expectation = f"a 3-D list shaped (seq, batch, {features}) of finite numbers"
    if isinstance(nested, FlatTensor):
        shape = list(nested.shape)
    elif isinstance(nested, list):
        shape = nested_shape(nested)
    else:
        raise InvalidInputError(f"{label} is {json_kind(nested)} but {expectation} was expected")
    if 0 in shape:
        raise InvalidInputError(f"{label} is empty (shape {shape}) but {expectation}, seq and batch > 0, was expected")
    if len(shape) != 3:
        raise InvalidInputError(f"{label} has {len(shape)} dimensions (shape {shape}) but {expectation} was expected")
    if shape[2] != features:
        raise InvalidInputError(f"{label} has last dimension {shape[2]} (shape {shape}) but {expectation} was expected")
    count = shape[0] * shape[1] * shape[2]
    if count > max_elements:
        raise PayloadTooLargeError(
            f"{label} has {count} elements (shape {shape}) but at most {max_elements} are accepted"
        )
    if isinstance(nested, FlatTensor):  # leaves in the nested lists' order: messages name the same flat index
        return numbers_to_float32(nested.leaves, nested.leaves, shape, label, expectation)
    leaves = flatten(nested, shape, label, expectation)
    return numbers_to_float32(leaves, nested, shape, label, expectation)


@dataclass(frozen=True)
class ParsedPredict:
    """A /predict body with its tensor not yet converted: it is checked once the model (and input size) is known."""

    inputs: Any  # nested lists, or a FlatTensor when the body took the fast path
    model: str
    version: int | str | None  # a string is an alias, or digits (a version); the predictor checks which


def parse_predict(body: bytes, *, default_model: str) -> ParsedPredict:
    """Parse and check a /predict body's fields; the tensor is validated by nested_to_array."""
    fast = split_predict_body(body)
    if fast is not None:
        tensor, fields = fast
        parsed: dict[str, Any] = {"inputs": tensor, **fields}
    else:
        parsed = parse_json_object(body)
    unknown = set(parsed) - {"inputs", "model", "version"}
    if unknown:
        raise InvalidInputError(f"unknown fields {sorted(unknown)}; expected 'inputs', optional 'model' and 'version'")
    if "inputs" not in parsed:
        raise InvalidInputError("missing 'inputs'; expected {'inputs': [[[x]]], 'model'?: str, 'version'?: int}")
    model = parsed.get("model", default_model)
    if not isinstance(model, str):
        raise InvalidInputError(f"'model' is {json_kind(model)} but a model name (string) was expected")
    version = parsed.get("version")
    if version is not None and not isinstance(version, str) and not _is_positive_int(version):
        raise InvalidInputError(
            f"'version' is {json_kind(version)} but a positive integer or an alias name (a string) was expected"
        )
    return ParsedPredict(inputs=parsed["inputs"], model=model, version=version)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def encode_predict(outputs: Float32Array, model: str, version: int) -> bytes:
    """The /predict answer; orjson writes the float32 array natively (no tolist())."""
    return orjson.dumps({"outputs": outputs, "model": model, "version": version}, option=orjson.OPT_SERIALIZE_NUMPY)
