"""The composition root: the objects one serving process is made of, built by the app's lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import model_store
from service.config import Settings
from service.dataplane import DataPlane
from service.job_gauges import JobGauges
from service.job_runner import JobRunner, RunnerSettings
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
    jobs: JobStore
    job_gauges: JobGauges
    runner: JobRunner | None = None
    sse_clients: int = 0  # event streams open now, against settings.max_sse_clients

    @classmethod
    async def open(cls, settings: Settings) -> Components:
        """Open the store and the job database; no model is loaded until the first `poller.refresh()`."""
        store = model_store.ModelStore(settings.store_dir)
        predictor = Predictor(store, settings.version_cache)
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

    def start_runner(self) -> JobRunner:
        settings = self.settings
        self.runner = JobRunner(
            jobs=self.jobs,
            store_dir=settings.store_dir,
            settings=RunnerSettings(
                concurrency=settings.job_concurrency,
                time_limit=settings.job_time_limit,
                poll_interval=settings.job_poll_interval,
                heartbeat_timeout=settings.job_heartbeat_timeout,
                torch_threads=settings.job_torch_threads,
                nice=settings.job_nice,
                memory_budget_mb=settings.job_memory_budget_mb,
                memory_limit_mb=settings.job_memory_limit,
            ),
            on_success=self.poller.refresh,
        )
        return self.runner

    def wake_runner(self) -> None:
        if self.runner is not None:
            self.runner.wake()

    async def close(self) -> None:
        await self.dataplane.close()
