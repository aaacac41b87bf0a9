"""Dynamic batching: small concurrent requests for one model version share a forward pass.

Requests wait in a queue; one worker per (model version) takes everything that is queued (up to
`max_batch` sequences, waiting at most `max_wait` for more), right-pads the sequences of a length
bucket to the longest of them, runs one forward in the inference thread, and hands each request
its own columns and steps back. The LSTM is causal, so padding after a sequence's end changes
none of its outputs: every answer equals the unbatched one. While a forward runs in the thread,
the event loop keeps parsing requests, so batches grow with load and vanish when it is idle.
A batch of one tiny request (nothing else was queued) runs on the event loop instead, as it would
without batching: the thread hop costs more than its forward, and while it runs the loop reads no
new requests, so they queue and the next batch is larger.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from service.predictor import ServedModel

Forward = Callable[[ServedModel, np.ndarray], Awaitable[np.ndarray]]


def bucket(length: int) -> int:
    """Sequences are batched with others of the same power-of-two length bucket, so padding stays under 2x."""
    return 1 << max(0, length - 1).bit_length()


@dataclass
class Timing:
    """Filled in for a caller that passes one: how long the forward pass its request ran in took."""

    compute_ns: int = 0


@dataclass
class _Request:
    x: np.ndarray  # (seq, batch, features)
    future: asyncio.Future[np.ndarray]
    timing: Timing | None = None


@dataclass
class _Lane:
    """The queue and worker of one model version."""

    queue: asyncio.Queue[_Request] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None


class Batcher:
    """Groups concurrent small requests into shared forward passes."""

    def __init__(
        self,
        forward: Forward,
        max_batch: int,
        max_wait: float,
        on_batch: Callable[[str, int], None],
        inline_max_elements: int = 0,
    ) -> None:
        self._forward = forward
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.inline_max_elements = inline_max_elements  # a lone request up to this size runs on the event loop
        self._on_batch = on_batch
        self._lanes: dict[tuple[str, int], tuple[ServedModel, _Lane]] = {}

    async def submit(self, served: ServedModel, x: np.ndarray, timing: Timing | None = None) -> np.ndarray:
        """The outputs for `x`, computed in a batch with whatever else is queued for the same version."""
        key = (served.name, served.version)
        entry = self._lanes.get(key)
        if entry is None or entry[0] is not served:
            if entry is not None and entry[1].worker is not None:
                entry[1].worker.cancel()  # that version was reloaded: its queue is drained and unused
            entry = (served, _Lane())
            self._lanes[key] = entry
        lane = entry[1]
        if lane.worker is None or lane.worker.done():
            lane.worker = asyncio.create_task(self._work(served, lane), name=f"batcher-{served.name}-{served.version}")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        lane.queue.put_nowait(_Request(x, future, timing))
        return await future

    async def _take(self, lane: _Lane) -> list[_Request]:
        """The next batch: at least one request, then whatever arrives within max_wait, up to max_batch sequences."""
        first = await lane.queue.get()
        taken = [first]
        columns = first.x.shape[1]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while columns < self.max_batch:
            try:
                request = lane.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(lane.queue.get(), remaining)
                except TimeoutError:
                    break
            taken.append(request)
            columns += request.x.shape[1]
        return taken

    async def _work(self, served: ServedModel, lane: _Lane) -> None:
        while True:
            taken = await self._take(lane)
            groups: dict[int, list[_Request]] = {}
            for request in taken:
                groups.setdefault(bucket(request.x.shape[0]), []).append(request)
            for group in groups.values():
                await self._run(served, group)

    async def _run(self, served: ServedModel, group: list[_Request]) -> None:
        live = [request for request in group if not request.future.done()]  # skip clients that went away
        if not live:
            return
        started = time.perf_counter_ns()
        try:
            if len(live) == 1 and live[0].x.size <= self.inline_max_elements:
                outputs = [served(live[0].x)]
            elif len(live) == 1:
                outputs = [await self._forward(served, live[0].x)]
            else:
                outputs = split(await self._forward(served, pad_and_stack([r.x for r in live])), live)
            self._on_batch(served.name, sum(r.x.shape[1] for r in live))
        except Exception as exc:  # a failed forward fails its own requests, never the worker
            for request in live:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        elapsed = time.perf_counter_ns() - started
        for request, output in zip(live, outputs, strict=True):
            if request.timing is not None:
                request.timing.compute_ns = elapsed
            if not request.future.done():
                request.future.set_result(output)

    async def close(self) -> None:
        for _, lane in self._lanes.values():
            if lane.worker is not None:
                lane.worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.worker
        self._lanes.clear()


def pad_and_stack(inputs: list[np.ndarray]) -> np.ndarray:
    """(seq_i, batch_i, f) arrays to one (max seq, sum batch, f) array, zero-padded at the end of time."""
    longest = max(x.shape[0] for x in inputs)
    total = sum(x.shape[1] for x in inputs)
    stacked = np.zeros((longest, total, inputs[0].shape[2]), dtype=np.float32)
    start = 0
    for x in inputs:
        stacked[: x.shape[0], start : start + x.shape[1]] = x
        start += x.shape[1]
    return stacked


def split(output: np.ndarray, requests: list[_Request]) -> list[np.ndarray]:
    """Each request's own columns and steps of a batched (max seq, sum batch, f) output."""
    parts = []
    start = 0
    for request in requests:
        seq, batch = request.x.shape[:2]
        parts.append(np.ascontiguousarray(output[:seq, start : start + batch]))
        start += batch
    return parts
