"""The values one step of a stateful sequence carries between transports, the router and the sequence table."""

from __future__ import annotations

from dataclasses import dataclass

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
