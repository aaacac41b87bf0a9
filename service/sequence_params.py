"""The OIP request parameters of a stateful sequence (Triton's sequence_id, sequence_start, sequence_end), validated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from service.errors import InvalidInputError
from service.sequence_types import SequenceId, SequenceStep
from service.tensors import brief, json_kind

SEQUENCE_ID: Final = "sequence_id"
SEQUENCE_START: Final = "sequence_start"
SEQUENCE_END: Final = "sequence_end"
MAX_INTEGER_ID: Final = 2**64 - 1  # Triton's correlation ids are uint64


@dataclass(frozen=True)
class SequenceParams:
    """A request's sequence parameters: which sequence, and whether this chunk starts or ends it."""

    sequence_id: SequenceId
    start: bool
    end: bool


def is_sequence_request(parameters: dict[str, Any]) -> bool:
    """Whether a request's parameters name any sequence parameter (cheap: for the plain path)."""
    return SEQUENCE_ID in parameters or SEQUENCE_START in parameters or SEQUENCE_END in parameters


def parse_sequence_params(parameters: dict[str, Any], *, max_id_length: int) -> SequenceParams:
    """The sequence parameters of a request that names some (is_sequence_request); 422 saying what was expected."""
    if SEQUENCE_ID not in parameters:
        named = [key for key in (SEQUENCE_START, SEQUENCE_END) if key in parameters]
        raise InvalidInputError(
            f"request parameters have {' and '.join(named)} but no sequence_id; a sequence_id (a non-empty string or "
            "a positive integer) was expected beside them"
        )
    return SequenceParams(
        sequence_id=_sequence_id(parameters[SEQUENCE_ID], max_id_length),
        start=_flag(parameters, SEQUENCE_START),
        end=_flag(parameters, SEQUENCE_END),
    )


def sequence_step_of(
    model: str,
    version: int | str | None,
    parameters: dict[str, Any],
    samples: npt.NDArray[np.float32],
    *,
    max_id_length: int,
) -> SequenceStep:
    """The step an OIP request of a sequence carries (REST and gRPC alike); 422 on a bad sequence parameter."""
    params = parse_sequence_params(parameters, max_id_length=max_id_length)
    return SequenceStep(
        model=model,
        version=version,
        sequence_id=params.sequence_id,
        start=params.start,
        end=params.end,
        samples=samples,
    )


def _sequence_id(value: object, max_length: int) -> SequenceId:
    expected = f"a non-empty string of at most {max_length} characters or an integer in [1, 2**64 - 1]"
    if isinstance(value, int) and not isinstance(value, bool):  # a bool is an int to Python, not an id
        if not 1 <= value <= MAX_INTEGER_ID:
            raise InvalidInputError(f"request parameter 'sequence_id' is {brief(value)} but {expected} was expected")
        return value
    if isinstance(value, str):
        if not value or len(value) > max_length:
            raise InvalidInputError(
                f"request parameter 'sequence_id' is a string of {len(value)} characters but {expected} was expected"
            )
        return value
    raise InvalidInputError(f"request parameter 'sequence_id' is {json_kind(value)} but {expected} was expected")


def _flag(parameters: dict[str, Any], key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInputError(f"request parameter {key!r} is {json_kind(value)} but a boolean was expected")
    return value
