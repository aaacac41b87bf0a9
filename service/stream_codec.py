"""The WebSocket stream's message format: client messages to validated samples, outputs and errors to replies.

One connection carries one sequence (docs/sequences.md, "WebSocket"). A client message is either

- text, a JSON object `{"samples": [x, x, ...], "end": true?}`: the new samples of the sequence, a flat list of
  numbers when the model reads one feature per step, or `[[x, ...], ...]`, one list of `input_size` numbers per
  step, for any model; `"end": true` makes it the sequence's last chunk, and `{"end": true}` alone ends it; or
- binary, the new samples as little-endian float32, `input_size` values per step, step after step.

A text message is answered by a text reply `{"outputs": [...], "model", "version", "sequence_id", "step", "end"}`
(outputs flat when the model gives one value per step, else one list per step; `step` counts the messages
answered on this connection, from 1); a binary message by a binary reply, the outputs as little-endian float32.
An error is the text `{"error": "...", "status": N}`, followed by the close code 4000 + N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from service.errors import InvalidInputError, PayloadTooLargeError
from service.tensors import check_finite, flatten, json_kind, nested_shape, numbers_to_float32

Float32Array = npt.NDArray[np.float32]

FIELDS: Final = frozenset({"samples", "end"})
# A close frame's reason is at most 123 bytes (RFC 6455, 5.5); the full message goes in the error reply before it.
REASON_MAX_BYTES: Final = 123

# Close codes besides 4000 + an HTTP status (docs/sequences.md lists them all).
NORMAL: Final = 1000  # the sequence ended: the client's "end": true, answered
TOO_BIG: Final = 1009  # a message over LSTM_MAX_BODY_BYTES (uvicorn's ws_max_size, and checked here too)
INTERNAL: Final = 1011  # an unexpected server error (logged)
SHUTDOWN: Final = 1012  # the server is shutting down (uvicorn's own close); reconnect and start again
IDLE: Final = 4408  # no message for LSTM_SEQUENCE_IDLE_TIMEOUT seconds (HTTP 408, Request Timeout)


def close_code(status: int) -> int:
    """The close code of an error answered with HTTP `status`: 4000 + status (4422, 4409, 4429, 4503 ...)."""
    return 4000 + status


def close_reason(message: str) -> str:
    """`message` cut to fit a close frame (123 bytes of UTF-8), with an ellipsis when cut."""
    raw = message.encode()
    if len(raw) <= REASON_MAX_BYTES:
        return message
    return raw[: REASON_MAX_BYTES - 3].decode(errors="ignore") + "..."


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays with == is elementwise, not a bool
class StreamMessage:
    """One client message: its new samples (None: `{"end": true}` alone) and whether it ends the sequence."""

    samples: Float32Array | None  # (seq, 1, input_size), C-contiguous
    end: bool
    binary: bool  # answer it with a binary reply


def _expectation(input_size: int) -> str:
    if input_size == 1:
        return "a non-empty list of finite numbers (one per step), or of one-number lists [[x], ...]"
    return f"a non-empty list of {input_size}-number lists (one per step) of finite numbers"


def _samples(data: Any, input_size: int, max_elements: int) -> Float32Array:
    """(seq, 1, input_size) float32 from the `samples` field: flat numbers (input size 1) or one list per step."""
    label, expectation = "'samples'", _expectation(input_size)
    if not isinstance(data, list):
        raise InvalidInputError(f"{label} is {json_kind(data)} but {expectation} was expected")
    if not data:
        raise InvalidInputError(f"{label} is empty but {expectation} was expected")
    flat = not isinstance(data[0], list)
    if flat and input_size != 1:
        raise InvalidInputError(
            f"{label} is a flat list but the model reads {input_size} numbers per step: {expectation} was expected"
        )
    shape = [len(data)] if flat else nested_shape(data)
    if not flat and (len(shape) != 2 or shape[1] != input_size):
        raise InvalidInputError(
            f"{label} is nested as shape {shape} but {expectation}, shape [seq, {input_size}], was expected"
        )
    count = len(data) * input_size
    if count > max_elements:
        raise PayloadTooLargeError(f"{label} has {count} numbers but at most {max_elements} are accepted")
    leaves = data if flat else flatten(data, shape, label, expectation)
    return numbers_to_float32(leaves, data, [len(data), 1, input_size], label, expectation)


def decode_text(text: str, *, input_size: int, max_elements: int) -> StreamMessage:
    """A text message: `{"samples": [...], "end"?: bool}`, or `{"end": true}` alone."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(
            f'message is not valid JSON: {error}; a JSON object {{"samples": [...], "end"?: true}} was expected'
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidInputError(
            f'message is {json_kind(parsed)} but a JSON object {{"samples": [...], "end"?: true}} was expected'
        )
    unknown = set(parsed) - FIELDS
    if unknown:
        raise InvalidInputError(f"unknown fields {sorted(unknown)}; expected 'samples' and optional 'end'")
    end = parsed.get("end", False)
    if not isinstance(end, bool):
        raise InvalidInputError(f"'end' is {json_kind(end)} but true or false was expected")
    if "samples" not in parsed:
        if end:
            return StreamMessage(samples=None, end=True, binary=False)
        raise InvalidInputError(
            f'missing \'samples\'; expected {{"samples": {_expectation(input_size)}, "end"?: true}} or {{"end": true}}'
        )
    return StreamMessage(_samples(parsed["samples"], input_size, max_elements), end, binary=False)


def decode_binary(data: bytes, *, input_size: int, max_elements: int) -> StreamMessage:
    """A binary message: little-endian float32, `input_size` values per step."""
    step_bytes = 4 * input_size
    expectation = f"little-endian float32 values, {input_size} per step ({step_bytes} bytes a step), at least one step"
    if not data or len(data) % step_bytes:
        raise InvalidInputError(f"binary message of {len(data)} bytes but {expectation} was expected")
    count = len(data) // 4
    if count > max_elements:
        raise PayloadTooLargeError(f"binary message has {count} numbers but at most {max_elements} are accepted")
    # (seq, 1, input_size); a copy, in native order: the buffer is the message's and torch wants it writable.
    samples = np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(-1, 1, input_size)
    check_finite(samples, "binary message")
    return StreamMessage(samples, end=False, binary=True)


def encode_text_reply(
    outputs: Float32Array, *, model: str, version: int, sequence_id: str, step: int, end: bool
) -> str:
    """The reply to a text message; outputs (seq, 1, output_size) as a flat list when output_size is 1."""
    # orjson writes only C-contiguous arrays; these are small views of a (seq, 1, output_size) array.
    values = np.ascontiguousarray(outputs[:, 0, 0] if outputs.shape[2] == 1 else outputs[:, 0, :])
    reply = {
        "outputs": values,
        "model": model,
        "version": version,
        "sequence_id": sequence_id,
        "step": step,
        "end": end,
    }
    return orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def encode_binary_reply(outputs: Float32Array) -> bytes:
    """The reply to a binary message: outputs (seq, 1, output_size) as little-endian float32, step after step."""
    return np.ascontiguousarray(outputs, dtype="<f4").tobytes()


def encode_error(message: str, status: int) -> str:
    """The error reply sent before the close code 4000 + status."""
    return orjson.dumps({"error": message, "status": status}).decode()
