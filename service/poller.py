"""The store poller: follows alias changes and new models, and publishes what is served (and damaged) to /metrics.

A store that can tell of its changes (a CatalogStore's ChangeFeed: PostgreSQL's NOTIFY) wakes the poller at once;
the periodic refresh every LSTM_POLL_INTERVAL stays, as the fallback for a change the feed missed (its
database connection was down) and for a folder store, which tells no one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio.to_thread

from model_store.change_feed import ChangeFeed
from service import metrics, runtimes
from service.conditions import Condition
from service.predictor import Predictor

log = logging.getLogger("service.poller")


class Poller:
    """Brings the predictor to what the store says, every `interval` seconds or when asked (`refresh`)."""

    def __init__(self, predictor: Predictor, interval: float, changes: ChangeFeed | None = None) -> None:
        self.predictor = predictor
        self.interval = interval
        self.changes = changes
        self.woken = 0  # refreshes a change notification started (tests and logs tell them from the periodic ones)
        self.trouble = Condition(log, "store poll failed")
        self._damage_published: set[str] = set()

    async def refresh(self) -> None:
        """Pick up alias changes and new models, and publish what is served to /metrics."""
        changed = await anyio.to_thread.run_sync(self.predictor.refresh)
        for name in changed:
            metrics.SWAPS.labels(name).inc()
        self.publish_state()

    def publish_state(self) -> None:
        for name, served in self.predictor.serving().items():
            metrics.SERVED_VERSION.labels(name).set(served.version)
            for runtime in runtimes.RUNTIMES:
                metrics.SERVED_RUNTIME.labels(name, runtime).set(int(runtime == served.runtime_name))
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

    async def run_forever(self) -> None:
        """Check the store every interval, and at once when the store's change feed says a model changed, for the
        life of the process."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def changed(model: str) -> None:  # on the feed's thread: hand the news to the loop
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing left to refresh
                loop.call_soon_threadsafe(wake.set)

        if self.changes is not None:
            self.changes.start(changed)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.interval)
                if wake.is_set():
                    # Cleared before the refresh: a change committed while it reads wakes the next one.
                    wake.clear()
                    self.woken += 1
                try:
                    await self.refresh()
                except Exception as exc:  # a bug must not stop the poller for good, nor fill the log every tick
                    self.trouble.failing(repr(exc), traceback=True)
                else:
                    self.trouble.ok()
        finally:
            if self.changes is not None:
                self.changes.close(wait=False)
