"""The frames workers exchange over their peer sockets: a sequence step or end, and its output, answer or error.

A frame is two big-endian uint32 lengths, a header of that many bytes (a JSON object, written by orjson) and a
body of raw little-endian float32 samples (empty but for steps and outputs):

    | header length | body length | header JSON | body |

Every header has `kind` and `id`; the id pairs an answer with its request, so one connection carries many at
once. Requests: `step` (model, version, sequence_id, start, end, shape; body: the samples) and `end` (model,
sequence_id). Answers: `output` (model, version, sequence_id, shape; body: the outputs), `ended` (found) and
`error` (the class name and the message of the domain error the owner raised, so the client gets the status and
words it would have had from the owner itself). A frame that breaks these rules is a WireError: the reader
cannot trust what follows it on that connection, so the connection is closed.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

import model_store
from service.errors import ServiceError
from service.sequence_types import SequenceOutput, SequenceStep

PREFIX = struct.Struct(">II")  # header length, body length
MAX_HEADER_BYTES = 64 * 1024  # a header names a model, a version and an id: far less
FLOAT32 = np.dtype("<f4")
# (seq, 1, features) when valid; any shape travels, so the owner answers a bad one as it would its own (422).
Shape = Annotated[tuple[Annotated[int, Field(ge=0)], ...], Field(max_length=8)]
WireSequenceId = Annotated[str, Field(min_length=1)] | Annotated[int, Field(ge=1)]


class WireError(ValueError):
    """A frame that is not what this module writes: bad lengths, a header that is not one of the kinds, a body
    that does not match its shape."""


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: Annotated[int, Field(ge=0, lt=2**63)]


class StepHeader(_Header):
    kind: Literal["step"]
    model: str
    version: Annotated[int, Field(ge=1)] | str | None
    sequence_id: WireSequenceId
    start: bool
    end: bool
    shape: Shape


class EndHeader(_Header):
    kind: Literal["end"]
    model: str
    sequence_id: WireSequenceId


class OutputHeader(_Header):
    kind: Literal["output"]
    model: str
    version: Annotated[int, Field(ge=1)]
    sequence_id: WireSequenceId
    shape: Shape


class EndedHeader(_Header):
    kind: Literal["ended"]
    found: bool


class ErrorHeader(_Header):
    kind: Literal["error"]
    error: str  # the class name
    message: str


Header = Annotated[StepHeader | EndHeader | OutputHeader | EndedHeader | ErrorHeader, Field(discriminator="kind")]
_HEADER: TypeAdapter[Header] = TypeAdapter(Header)


@dataclass(frozen=True)
class EndRequest:
    """Free a sequence's state (Triton's sequence_end without samples, or an idle client giving up)."""

    model: str
    sequence_id: str | int


Request = SequenceStep | EndRequest
Answer = SequenceOutput | bool | Exception  # bool: whether `end` found the sequence live


@dataclass(frozen=True)
class Frame:
    header: Header
    body: bytes


# ---- encoding ------------------------------------------------------------------------------------------------


def _frame(header: dict[str, object], body: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return PREFIX.pack(len(head), len(body)) + head + body


def _samples(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=FLOAT32).tobytes()


def encode_request(request_id: int, request: Request) -> bytes:
    if isinstance(request, EndRequest):
        return _frame({"kind": "end", "id": request_id, "model": request.model, "sequence_id": request.sequence_id})
    header = {
        "kind": "step",
        "id": request_id,
        "model": request.model,
        "version": request.version,
        "sequence_id": request.sequence_id,
        "start": request.start,
        "end": request.end,
        "shape": list(request.samples.shape),
    }
    return _frame(header, _samples(request.samples))


def encode_answer(request_id: int, answer: Answer) -> bytes:
    if isinstance(answer, Exception):
        return _frame({"kind": "error", "id": request_id, "error": type(answer).__name__, "message": str(answer)})
    if isinstance(answer, bool):
        return _frame({"kind": "ended", "id": request_id, "found": answer})
    header = {
        "kind": "output",
        "id": request_id,
        "model": answer.model,
        "version": answer.version,
        "sequence_id": answer.sequence_id,
        "shape": list(answer.outputs.shape),
    }
    return _frame(header, _samples(answer.outputs))


# ---- decoding ------------------------------------------------------------------------------------------------


async def read_frame(reader: asyncio.StreamReader, max_body: int) -> Frame | None:
    """The next frame, or None when the peer closed the connection between frames.

    WireError for a malformed frame (a body over `max_body` bytes included); asyncio.IncompleteReadError when
    the connection ends inside one."""
    try:
        prefix = await reader.readexactly(PREFIX.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    header_length, body_length = PREFIX.unpack(prefix)
    if not 0 < header_length <= MAX_HEADER_BYTES:
        raise WireError(f"a frame header of {header_length} bytes (expected 1 to {MAX_HEADER_BYTES})")
    if body_length > max_body:
        raise WireError(f"a frame body of {body_length} bytes (at most {max_body} here)")
    head = await reader.readexactly(header_length)
    body = await reader.readexactly(body_length) if body_length else b""
    return parse_frame(head, body)


def parse_frame(head: bytes, body: bytes) -> Frame:
    """A frame from its header bytes and body; WireError unless the header is one of the kinds and the body fits."""
    try:
        header = _HEADER.validate_json(head)  # JSON mode: strict, but a JSON array is a tuple
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "header"
        raise WireError(f"a frame header that is not one of the kinds: {where}: {first['msg']}") from None
    expected = 4 * int(np.prod(header.shape)) if isinstance(header, StepHeader | OutputHeader) else 0
    if len(body) != expected:
        raise WireError(f"a {header.kind} frame with a body of {len(body)} bytes (expected {expected})")
    return Frame(header, body)


def _array(body: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(body, dtype=FLOAT32).astype(np.float32, copy=True).reshape(shape)  # writable, native order


def request_of(frame: Frame) -> tuple[int, Request]:
    """The request id and the request a frame carries; WireError for an answer."""
    header = frame.header
    if isinstance(header, StepHeader):
        samples = _array(frame.body, header.shape)
        step = SequenceStep(header.model, header.version, header.sequence_id, header.start, header.end, samples)
        return header.id, step
    if isinstance(header, EndHeader):
        return header.id, EndRequest(header.model, header.sequence_id)
    raise WireError(f"a {header.kind} frame where a request was expected")


def answer_of(frame: Frame) -> tuple[int, Answer]:
    """The request id and the answer a frame carries (an error as the exception to raise); WireError for a request."""
    header = frame.header
    if isinstance(header, OutputHeader):
        outputs = _array(frame.body, header.shape)
        return header.id, SequenceOutput(header.model, header.version, header.sequence_id, outputs)
    if isinstance(header, EndedHeader):
        return header.id, header.found
    if isinstance(header, ErrorHeader):
        return header.id, rebuild_error(header.error, header.message)
    raise WireError(f"a {header.kind} frame where an answer was expected")


def _subclasses(base: type[Exception]) -> list[type[Exception]]:
    found = [base]
    for sub in base.__subclasses__():
        found.extend(_subclasses(sub))
    return found


def error_classes() -> dict[str, type[Exception]]:
    """The domain errors an answer may name: the service's and the store's, by class name."""
    return {kind.__name__: kind for kind in [*_subclasses(ServiceError), *_subclasses(model_store.StoreError)]}


def rebuild_error(name: str, message: str) -> Exception:
    """The exception `name` with `message`, as the owner raised it; a ServiceError (500) for a name not known here."""
    kind = error_classes().get(name, ServiceError)
    try:
        error = kind(message)
    except TypeError:  # a class whose constructor takes its parts (DamagedModelError): only the message travels
        error = kind.__new__(kind)
        Exception.__init__(error, message)
    return error
