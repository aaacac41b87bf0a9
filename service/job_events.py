"""JobEvents: the hub of one serving process that pushes job snapshots to its event-stream subscribers.

While anyone is subscribed, one task reads every subscribed job in ONE query per interval (the runner
may be another process: the database is where its progress shows) and hands each subscriber the newest
snapshot when it changed. A runner in this process calls `notify` on progress and outcome, so those are
read at once rather than at the next interval. Snapshots are coalesced, never queued: a slow client gets
the newest one, and the final one (a finished job no longer changes) is never lost. With nobody
subscribed, nothing is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from service.conditions import Condition
from service.job_queue import JobQueue
from service.jobs import Job

log = logging.getLogger("service.job_events")
POLL_SECONDS = 0.25  # how often subscribed jobs are read while streams are open


@dataclass(eq=False)
class Subscription:
    """One open event stream: the job it follows and the newest snapshot not yet sent."""

    job_id: str
    latest: Job | None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False  # the hub closed: the stream ends without a final event
    released: bool = False

    def offer(self, job: Job) -> None:
        self.latest = job
        self.changed.set()


class JobEvents:
    """Subscriptions to jobs, fed by one polling task; `streams` counts the open ones (for max_sse_clients)."""

    def __init__(self, jobs: JobQueue, interval: float = POLL_SECONDS) -> None:
        self.jobs = jobs
        self.interval = interval
        self._subscribers: dict[str, set[Subscription]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._trouble = Condition(log, "cannot read jobs for their event streams")

    @property
    def streams(self) -> int:
        """Subscriptions open now (counted from `subscribe` until `release`)."""
        return sum(len(subscribers) for subscribers in self._subscribers.values())

    def subscribe(self, job: Job) -> Subscription:
        """Follow `job` from this snapshot on. Synchronous on purpose: a caller that checked `streams` and
        subscribes with no await in between cannot be overtaken by another."""
        subscription = Subscription(job.id, job)
        subscription.changed.set()  # the first snapshot goes out at once
        if self._closed:
            subscription.ended = True
            return subscription
        self._subscribers.setdefault(job.id, set()).add(subscription)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="job-events")
        return subscription

    def release(self, subscription: Subscription) -> None:
        """The stream is over (or never started): give its slot back. Idempotent."""
        if subscription.released:
            return
        subscription.released = True
        subscribers = self._subscribers.get(subscription.job_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[subscription.job_id]

    def notify(self, job_id: str) -> None:
        """A job changed (called by a runner in this process): read the subscribed jobs now."""
        if job_id in self._subscribers:
            self._wake.set()

    async def follow(self, subscription: Subscription) -> AsyncIterator[Job]:
        """The snapshots of the subscribed job as they change, up to and including the finished one."""
        last: dict[str, Any] | None = None
        while True:
            await subscription.changed.wait()
            subscription.changed.clear()
            job = subscription.latest
            if subscription.ended or job is None:
                return
            shown = job.public()
            if shown != last:
                last = shown
                yield job
            if job.finished:
                return

    def end(self, subscription: Subscription) -> None:
        """End this stream now (the server is shutting down): `follow` returns without a final event."""
        subscription.ended = True
        subscription.changed.set()

    async def close(self) -> None:
        """End every stream (they return without a final event) and stop reading."""
        self._closed = True
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                self.end(subscription)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while self._subscribers and not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            wanted = list(self._subscribers)
            if not wanted:
                return
            try:
                found = await anyio.to_thread.run_sync(self.jobs.get_many, wanted)
            except Exception as exc:  # a failing store (or a bug) must not end the streams; said once
                self._trouble.failing(repr(exc))
                continue
            self._trouble.ok()
            for job_id, job in found.items():
                for subscription in self._subscribers.get(job_id, ()):
                    latest = subscription.latest
                    # A read that began before the stream's first snapshot may end after it: never step back.
                    if latest is None or (job.stage() >= latest.stage() and job.public() != latest.public()):
                        subscription.offer(job)
