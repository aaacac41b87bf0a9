"""The per-process runtime the routes share: settings, store, predictor, and where inference runs."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import anyio.to_thread
import numpy as np
import torch

import model_store
from service import metrics
from service.batching import Batcher
from service.conditions import Condition
from service.config import Settings
from service.errors import NotReadyError
from service.job_events import JobEvents
from service.job_runner import JobWork
from service.jobs import JobStore
from service.predictor import Predictor, ServedModel

log = logging.getLogger("service.runtime")
DEFAULT_MODEL = "lstm"


@dataclass
class Runtime:
    settings: Settings
    store: model_store.ModelStore
    predictor: Predictor
    jobs: JobStore
    executor: ThreadPoolExecutor = field(init=False)
    job_work: JobWork | None = None  # set by the lifespan (service.job_runner.run_jobs)
    batcher: Batcher | None = None
    jobs_trouble: Condition = field(init=False)
    poll_trouble: Condition = field(init=False)
    _damage_published: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.jobs_trouble = Condition(log, "cannot read the training-job database for /metrics")
        self.poll_trouble = Condition(log, "store poll failed")
        # One thread: torch already uses `torch_threads` inside a forward; more threads would only
        # make large requests contend. torch's thread count is per OS thread, so the inference
        # thread sets its own (otherwise it gets an OpenMP team that busy-waits on a second core).
        self.executor = ThreadPoolExecutor(
            1, "inference", initializer=torch.set_num_threads, initargs=(self.settings.torch_threads,)
        )
        if self.settings.batching:
            self.batcher = Batcher(
                self._forward_in_thread,
                max_batch=self.settings.batch_max_size,
                max_wait=self.settings.batch_max_wait_ms / 1000,
                on_batch=lambda name, size: metrics.BATCH_SIZE.labels(name).observe(size),
                inline_max_elements=self.settings.inline_max_elements,
            )

    async def _forward_in_thread(self, served: ServedModel, x: np.ndarray) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.executor, served, x)

    @property
    def job_events(self) -> JobEvents:
        assert self.job_work is not None, "the lifespan has not started the job machinery"
        return self.job_work.events

    def wake_runner(self) -> None:
        if self.job_work is not None:
            self.job_work.wake()

    def publish_jobs(self) -> None:
        """The job gauges for /metrics; when the job database cannot be read, lstm_jobs_database_up says so."""
        try:
            counts = self.jobs.counts()
        except model_store.StorageError as exc:
            metrics.JOBS_DATABASE_UP.set(0)
            self.jobs_trouble.failing(str(exc))
            return
        metrics.JOBS_DATABASE_UP.set(1)
        self.jobs_trouble.ok()
        for state, count in counts.items():
            metrics.JOBS.labels(state).set(count)

    def not_ready_message(self) -> str:
        return (
            f"no model is loaded: the store at {self.settings.store_dir} has no model yet; train one with "
            f"`lstm-train --store {self.settings.store_dir}` (or POST /train) and it is served within "
            f"{self.settings.poll_interval:g} s"
        )

    async def model_for(self, name: str, version: int | str | None) -> ServedModel:
        """The model a request asked for (a version, an alias, or None for the serving one); a non-serving
        version is loaded off the event loop."""
        if not self.predictor.ready and version is None:
            if not self.store.versions(name):
                raise NotReadyError(self.not_ready_message())
        found = self.predictor.resolve(name, version)
        if isinstance(found, ServedModel):
            return found
        return await anyio.to_thread.run_sync(self.predictor.load_version, name, found)

    async def infer(self, served: ServedModel, x: np.ndarray) -> np.ndarray:
        """Run the model on one request: batched with others when small, else alone.

        A tiny request runs inline (a thread hop costs more than it does): here without batching, in the
        batcher when it is a batch of one.
        """
        if self.batcher is not None and x.size <= self.settings.batch_max_elements:
            return await self.batcher.submit(served, x)  # the batcher records the batch size
        if x.size <= self.settings.inline_max_elements:
            output = served(x)
        else:
            output = await self._forward_in_thread(served, x)
        metrics.BATCH_SIZE.labels(served.name).observe(x.shape[1])
        return output

    async def refresh(self) -> None:
        """Pick up alias changes and new models, and publish what is served to /metrics."""
        changed = await anyio.to_thread.run_sync(self.predictor.refresh)
        for name in changed:
            metrics.SWAPS.labels(name).inc()
        self.publish_state()

    def publish_state(self) -> None:
        for name, served in self.predictor.serving().items():
            metrics.SERVED_VERSION.labels(name).set(served.version)
        for name, failure in self.predictor.failures().items():
            if failure.reported is False:
                metrics.LOAD_FAILURES.labels(name).inc()
                failure.reported = True
        damaged = set(self.predictor.damage())
        for name in damaged:
            metrics.DAMAGED.labels(name).set(1)
        for name in self._damage_published - damaged:
            metrics.DAMAGED.labels(name).set(0)  # repaired: 0 rather than gone, so an alert sees it clear
        self._damage_published = damaged

    async def poll(self) -> None:
        """Check the store every poll_interval seconds, for the life of the process."""
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await self.refresh()
            except Exception as exc:  # a bug must not stop the poller for good, nor fill the log every tick
                self.poll_trouble.failing(repr(exc), traceback=True)
            else:
                self.poll_trouble.ok()

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        self.executor.shutdown(wait=True)
