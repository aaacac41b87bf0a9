"""ChangeFeed: a thread that LISTENs for the catalog's notifications and tells its subscriber a model changed.

Every write of a CatalogStore that changes what is served (a save, an alias set or removed, a delete, new ONNX
files) commits with `NOTIFY lstm_store, '<model>'`; PostgreSQL delivers it to every listening session once the
transaction commits, so a replica hears of a promotion at once instead of at its next poll. The feed listens
on a connection of its own (a pooled one would lose its LISTEN when returned) and, when the connection fails,
reconnects with a growing pause. Notifications sent while it was disconnected are lost, so after every
(re)connection it reports a change of "" (any model): the subscriber then reads the whole store once.
The poller's periodic refresh stays the fallback for whatever is missed while the database is away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from model_store.postgres import CONNECT_TIMEOUT_SECONDS, redacted

CHANNEL = "lstm_store"
ANY_MODEL = ""  # the change reported after a (re)connection: something may have changed while away
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0
WAKE_SECONDS = 1.0  # how often the listening thread looks up from the socket to see whether it was closed

log = logging.getLogger("model_store.change_feed")


class ChangeFeed:
    """LISTEN on `channel` of the database at `url` in a daemon thread; `start(notify)`, then `close()`."""

    def __init__(
        self,
        url: str,
        channel: str = CHANNEL,
        first_retry: float = FIRST_RETRY_SECONDS,
        max_retry: float = MAX_RETRY_SECONDS,
    ) -> None:
        self.url = url
        self.channel = channel
        self.first_retry = first_retry
        self.max_retry = max_retry
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()  # set while listening (tests wait on it)

    def start(self, notify: Callable[[str], None]) -> None:
        """Call `notify(model)` from the feed's thread for every change (`""`: any model, after a reconnection)."""
        if self._thread is not None:
            raise RuntimeError("the change feed is already started")
        self._thread = threading.Thread(target=self._run, args=(notify,), name="lstm-store-changes", daemon=True)
        self._thread.start()

    def close(self, wait: bool = True) -> None:
        """Stop listening; with `wait`, until the thread has ended (else it ends within about a second)."""
        self._closed.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=CONNECT_TIMEOUT_SECONDS + 2 * WAKE_SECONDS)

    def _run(self, notify: Callable[[str], None]) -> None:
        pause = self.first_retry
        failing = False
        while not self._closed.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self.connected.set()
                    if failing:
                        log.warning("listening for store changes at %s again", redacted(self.url))
                    failing, pause = False, self.first_retry
                    notify(ANY_MODEL)
                    while not self._closed.is_set():
                        for change in conn.notifies(timeout=WAKE_SECONDS):
                            notify(change.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                if not failing:  # once per outage, not once per attempt
                    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    log.warning(
                        "cannot listen for store changes at %s (%s); retrying, and polling meanwhile",
                        redacted(self.url),
                        detail,
                    )
                failing = True
                self._closed.wait(pause)
                pause = min(2 * pause, self.max_retry)
            except Exception:  # a subscriber's bug must not end the feed for the life of the process
                log.exception("a store-change subscriber failed")
                self._closed.wait(pause)
        self.connected.clear()
