"""The composition root: the objects one serving process is made of, built by the app's lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import model_store
from service.config import Settings
from service.dataplane import DataPlane
from service.job_backends import open_job_queue
from service.job_events import JobEvents
from service.job_gauges import JobGauges
from service.job_queue import JobQueue
from service.job_runner import JobWork
from service.peers import Peers
from service.poller import Poller
from service.predictor import Predictor
from service.repository import Repository
from service.sequence_router import PeerRouter, PeerServer
from training.store_settings import open_store


@dataclass
class Components:
    """What the routes reach through service/deps.py (as `app.state.components`)."""

    settings: Settings
    store: model_store.Store
    dataplane: DataPlane
    repository: Repository
    poller: Poller
    jobs: JobQueue
    job_gauges: JobGauges
    job_work: JobWork | None = None  # set by the lifespan (service.job_runner.run_jobs)
    open_streams: int = 0  # WebSocket streams open in this worker (routes/stream.py, bounded by max_streams)
    peer_server: PeerServer | None = None  # with several workers: answers the steps the others forward here

    @classmethod
    async def open(cls, settings: Settings, peers: Peers | None = None) -> Components:
        """Open the store and the job database; no model is loaded until the first `poller.refresh()`.

        With `peers` (one worker of several), sequence steps go through a PeerRouter to the worker that owns
        the sequence, and this worker listens for the steps forwarded to it; alone, there is no router at all."""
        store = await asyncio.to_thread(open_store, settings)  # a database-backed one migrates its schema first
        predictor = Predictor(
            store, settings.version_cache, settings.runtime, settings.onnx_threads, settings.onnx_max_elements
        )
        poller = Poller(predictor, settings.poll_interval, store.changes())
        jobs = await asyncio.to_thread(open_job_queue, settings)
        dataplane = DataPlane(settings, store, predictor)
        peer_server = None
        if peers is not None:
            router = PeerRouter(
                dataplane,
                peers,
                forward_timeout=settings.sequence_forward_timeout,
                connect_timeout=settings.sequence_connect_timeout,
            )
            dataplane.router = router
            peer_server = PeerServer(router, max_body=4 * settings.max_elements)  # float32 samples
            await peer_server.start()
        return cls(
            settings=settings,
            store=store,
            dataplane=dataplane,
            repository=Repository(store, predictor, poller.refresh),
            poller=poller,
            jobs=jobs,
            job_gauges=JobGauges(jobs),
            peer_server=peer_server,
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
        if self.peer_server is not None:
            await self.peer_server.close()
            await self.peer_server.router.close()
        await self.dataplane.close()
        await asyncio.to_thread(self.jobs.close)
        await asyncio.to_thread(self.store.close)
