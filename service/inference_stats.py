"""Inference statistics per model version, as Triton's statistics extension reports them (counts, cumulative ns).

Kept by the DataPlane of each worker process (so with several workers an answer covers the worker that
gave it, as with Triton's per-instance counters); REST (`GET /v2/models/{name}/stats`) and gRPC
(ModelStatistics) render the same values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    """How many, and their cumulative nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class VersionStats:
    """One model version's counters since this process started.

    success, fail: whole requests through the data plane; queue: the part of a successful request spent waiting
    for its forward pass (in the batcher's queue or for the inference thread); compute_infer: the forward pass
    it ran in (shared by the requests of one batch, each counting it, as Triton does).
    """

    name: str
    version: int
    inference_count: int = 0  # sequences (batch columns) inferred
    execution_count: int = 0  # forward passes run for requests (a batch of several requests counts once each)
    last_inference_ms: int = 0  # ms since the epoch
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)


class InferenceStats:
    """The counters of every model version this process has run."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, int], VersionStats] = {}

    def _of(self, name: str, version: int) -> VersionStats:
        found = self._versions.get((name, version))
        if found is None:
            found = self._versions[(name, version)] = VersionStats(name, version)
        return found

    def succeeded(self, name: str, version: int, batch: int, total_ns: int, compute_ns: int) -> None:
        stats = self._of(name, version)
        stats.inference_count += batch
        stats.execution_count += 1
        stats.last_inference_ms = time.time_ns() // 1_000_000
        stats.success.add(total_ns)
        stats.compute_infer.add(compute_ns)
        stats.queue.add(max(0, total_ns - compute_ns))

    def failed(self, name: str, version: int, total_ns: int) -> None:
        self._of(name, version).fail.add(total_ns)

    def of(self, name: str | None, version: int | None) -> list[VersionStats]:
        """The counters of `name` (None: every model) and `version` (None: every version), by name then version."""
        return [
            stats
            for key, stats in sorted(self._versions.items())
            if (name is None or key[0] == name) and (version is None or key[1] == version)
        ]
