"""The composition root: the objects one serving process is made of, built by the app's lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import model_store
from service.config import Settings
from service.dataplane import DataPlane
from service.job_events import JobEvents
from service.job_gauges import JobGauges
from service.job_queue import JobQueue
from service.job_runner import JobWork
from service.jobs import JobStore
from service.poller import Poller
from service.predictor import Predictor
from service.repository import Repository


@dataclass
class Components:
    """What the routes reach through service/deps.py (as `app.state.components`)."""

    settings: Settings
    dataplane: DataPlane
    repository: Repository
    poller: Poller
    jobs: JobQueue
    job_gauges: JobGauges
    job_work: JobWork | None = None  # set by the lifespan (service.job_runner.run_jobs)

    @classmethod
    async def open(cls, settings: Settings) -> Components:
        """Open the store and the job database; no model is loaded until the first `poller.refresh()`."""
        store = model_store.ModelStore(settings.store_dir)
        predictor = Predictor(
            store, settings.version_cache, settings.runtime, settings.onnx_threads, settings.onnx_max_elements
        )
        poller = Poller(predictor, settings.poll_interval)
        jobs = await asyncio.to_thread(JobStore, settings.store_dir)
        return cls(
            settings=settings,
            dataplane=DataPlane(settings, store, predictor),
            repository=Repository(store, predictor, poller.refresh),
            poller=poller,
            jobs=jobs,
            job_gauges=JobGauges(jobs),
        )

    @property
    def job_events(self) -> JobEvents:
        assert self.job_work is not None, "the lifespan has not started the job machinery"
        return self.job_work.events

    def wake_runner(self) -> None:
        """Look for work now, when this process runs the jobs (else the runner's next poll finds it)."""
        if self.job_work is not None:
            self.job_work.wake()

    async def close(self) -> None:
        await self.dataplane.close()
