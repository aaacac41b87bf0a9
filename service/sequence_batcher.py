"""Sequence batching: chunks of different live sequences that arrive together share one forward pass.

Triton's "oldest" strategy without a delay: steps wait in a lane per (model, version, chunk length); the lane's
task takes everything queued (up to `max_batch` sequences), stacks the chunks and their states along the batch
dimension, runs one state-carrying forward and hands each sequence its column of outputs and of the new state.
Chunks are grouped by exact length, never padded: padding would run the state past a chunk's end. A batch of
one tiny chunk runs on the event loop (a thread hop costs more than its forward); anything else runs in the
inference thread, and while it runs, new chunks queue and the next batch grows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from service.predictor import ServedModel

State = tuple[np.ndarray, np.ndarray, np.ndarray]  # y (seq, batch, output), h_n and c_n (num_layers, batch, hidden)
Forward = Callable[[ServedModel, np.ndarray, np.ndarray, np.ndarray], Awaitable[State]]
LaneKey = tuple[str, int, int]  # (model, version, chunk length)


@dataclass
class _Step:
    x: np.ndarray  # (seq, 1, input)
    h: np.ndarray  # (num_layers, 1, hidden)
    c: np.ndarray  # (num_layers, 1, hidden)
    future: asyncio.Future[State]


@dataclass
class _Lane:
    served: ServedModel
    pending: list[_Step] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class SequenceBatcher:
    """Groups concurrent sequence steps into shared state-carrying forward passes."""

    def __init__(
        self,
        forward_in_thread: Forward,
        *,
        max_batch: int,
        inline_max_elements: int,
        on_batch: Callable[[str, int], None],
    ) -> None:
        self._forward_in_thread = forward_in_thread
        self.max_batch = max_batch
        self.inline_max_elements = inline_max_elements
        self._on_batch = on_batch
        self._lanes: dict[LaneKey, _Lane] = {}

    async def submit(self, served: ServedModel, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> State:
        """Run one sequence's chunk x (seq, 1, input) from state h, c (num_layers, 1, hidden), with others."""
        key = (served.name, served.version, x.shape[0])
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(served)
        future: asyncio.Future[State] = asyncio.get_running_loop().create_future()
        lane.pending.append(_Step(x, h, c, future))
        if lane.task is None:
            lane.task = asyncio.create_task(self._drain(key, lane), name=f"sequence-batch-{served.name}")
        return await future

    async def _drain(self, key: LaneKey, lane: _Lane) -> None:
        try:
            while lane.pending:
                batch = lane.pending[: self.max_batch]
                del lane.pending[: self.max_batch]
                await self._run(lane.served, batch)
        finally:
            # No await between the loop's last check and here: a step appended after it finds no task and
            # starts one.
            lane.task = None
            if not lane.pending and self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _run(self, served: ServedModel, batch: list[_Step]) -> None:
        live = [step for step in batch if not step.future.done()]  # a cancelled caller needs no forward
        if not live:
            return
        self._on_batch(served.name, len(live))
        try:
            if len(live) == 1:
                one = live[0]
                if one.x.size <= self.inline_max_elements:
                    result = served.step(one.x, one.h, one.c)
                else:
                    result = await self._forward_in_thread(served, one.x, one.h, one.c)
                if not one.future.done():
                    one.future.set_result(result)
                return
            x = np.concatenate([step.x for step in live], axis=1)  # (seq, n, input)
            h = np.concatenate([step.h for step in live], axis=1)  # (num_layers, n, hidden)
            c = np.concatenate([step.c for step in live], axis=1)
            y, h_n, c_n = await self._forward_in_thread(served, x, h, c)
        except Exception as exc:
            for step in live:
                if not step.future.done():
                    step.future.set_exception(exc)
            return
        for i, step in enumerate(live):
            if not step.future.done():
                # Copies: each sequence keeps its own small state, not a view pinning the whole batch.
                step.future.set_result((y[:, i : i + 1], h_n[:, i : i + 1].copy(), c_n[:, i : i + 1].copy()))

    async def close(self) -> None:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes.values():
            for step in lane.pending:
                if not step.future.done():
                    step.future.cancel()
        self._lanes.clear()
