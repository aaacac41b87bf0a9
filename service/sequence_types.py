"""The values one step of a stateful sequence carries between transports, the router and the sequence table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

SequenceId = str | int  # Triton's correlation id: a non-empty string or a positive integer


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays with == is elementwise, not a bool
class SequenceStep:
    """One chunk of new samples for a sequence, with Triton's start and end flags."""

    model: str
    version: int | str | None  # what the request named (a number, an alias, None: serving); fixed at start
    sequence_id: SequenceId
    start: bool
    end: bool
    samples: npt.NDArray[np.float32]  # (seq, 1, input_size), C-contiguous


@dataclass(frozen=True, eq=False)
class SequenceOutput:
    """The model's outputs for one chunk, and the version the sequence is pinned to."""

    model: str
    version: int
    sequence_id: SequenceId
    outputs: npt.NDArray[np.float32]  # (seq, 1, output_size)


class SequenceRouter(Protocol):
    """Sends a step to the worker that holds its sequence (with several workers); DataPlane delegates to it.

    The owner runs the step with `DataPlane.sequence_step(step, local=True)` (and `end_sequence(..., local=True)`).
    """

    async def step(self, step: SequenceStep) -> SequenceOutput: ...

    async def end(self, model: str, sequence_id: SequenceId) -> bool: ...
