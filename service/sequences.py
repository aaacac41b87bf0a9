"""The live sequences of one worker: each one's pinned version and LSTM state, Triton's rules, and idle expiry.

A sequence is keyed by (model, sequence_id) and holds the ServedModel it started on (kept across promotions: the
object, not a version number to look up again), the state (h, c) after its last chunk, and a lock so the chunks
of one sequence run one after another in the order they arrived. Triton's sequence batcher rules:

- a chunk for an id that is not live needs `sequence_start: true`, else SequenceStateError (409), which says
  whether the id ended or expired recently (a bounded memory of ended and expired ids);
- `sequence_start: true` on a live id ends the old sequence and starts a new one (Triton does the same);
- `sequence_end: true` frees the state once its chunk ran;
- a sequence idle for `idle_timeout` seconds expires (the reaper, and every lookup, frees it);
- at most `max_live` sequences are live: a new start above that is BusyError (429).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service import metrics
from service.errors import BusyError, SequenceStateError
from service.predictor import ServedModel
from service.sequence_types import SequenceId

Key = tuple[str, SequenceId]  # (model, sequence_id); 7 and "7" are two ids, as in Triton
EXPIRED = "expired"
ENDED = "ended"
FAILED = "failed"


@dataclass(eq=False)
class LiveSequence:
    """One live sequence: its pinned version and the state after its last chunk."""

    model: str
    sequence_id: SequenceId
    served: ServedModel  # the version it started on, to its end
    requested: int | str | None  # the version reference its start named (None: the serving version)
    h: np.ndarray  # (num_layers, 1, hidden) float32
    c: np.ndarray  # (num_layers, 1, hidden) float32
    last_used: float  # time.monotonic() of its last chunk
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    live: bool = True
    gone: str = ""  # why it stopped being live, told to a chunk that waited on its lock

    @property
    def key(self) -> Key:
        return (self.model, self.sequence_id)

    def describe(self) -> str:
        return f"sequence {self.sequence_id!r} of model {self.model!r}"


@dataclass(frozen=True)
class _Gone:
    how: str  # ENDED, EXPIRED or FAILED
    at: float
    detail: str


class SequenceTable:
    """The live sequences of this worker, with the memory of those that ended or expired lately."""

    def __init__(
        self,
        *,
        max_live: int,
        idle_timeout: float,
        memory: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_live = max_live
        self.idle_timeout = idle_timeout
        self.memory = memory
        self._clock = clock
        # Least recently used first: the reaper stops at the first sequence that is not idle.
        self._live: OrderedDict[Key, LiveSequence] = OrderedDict()
        self._gone: OrderedDict[Key, _Gone] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    # ---- Triton's rules --------------------------------------------------------------------------

    def start(
        self, model: str, sequence_id: SequenceId, served: ServedModel, requested: int | str | None
    ) -> LiveSequence:
        """A new sequence from the zero state; a live one of the same id is ended first (Triton's rule)."""
        key = (model, sequence_id)
        old = self._live.get(key)
        if old is not None:
            self._drop(old, "was restarted by a newer chunk with sequence_start: true")
        elif len(self._live) >= self.max_live:
            self.expire_idle()
            if len(self._live) >= self.max_live:
                raise BusyError(
                    f"this worker already holds {len(self._live)} live sequences, the most allowed "
                    f"(LSTM_MAX_SEQUENCES={self.max_live}); end some (sequence_end: true) or retry later"
                )
        h, c = served.initial_state(1)
        entry = LiveSequence(
            model=model, sequence_id=sequence_id, served=served, requested=requested, h=h, c=c, last_used=self._clock()
        )
        self._live[key] = entry
        self._gone.pop(key, None)
        metrics.SEQUENCES_LIVE.labels(model).inc()
        return entry

    def get(self, model: str, sequence_id: SequenceId) -> LiveSequence:
        """The live sequence of a chunk without sequence_start; SequenceStateError saying why there is none."""
        key = (model, sequence_id)
        entry = self._live.get(key)
        if entry is not None and self._idle(entry, self._clock()):
            self._expire(entry)
            entry = None
        if entry is None:
            raise SequenceStateError(self._not_live_message(key))
        return entry

    def touch(self, entry: LiveSequence) -> None:
        """A chunk of `entry` ran: it is not idle."""
        entry.last_used = self._clock()
        if self._live.get(entry.key) is entry:
            self._live.move_to_end(entry.key)

    def end(self, entry: LiveSequence, how: str = "a chunk with sequence_end: true") -> None:
        """sequence_end: free the state (remembering that the id ended, and `how`)."""
        if self._live.get(entry.key) is entry:
            self._drop(entry, f"ended ({how})")
            self._remember(entry.key, _Gone(ENDED, self._clock(), how))

    def fail(self, entry: LiveSequence, error: BaseException) -> None:
        """A chunk failed: its state is not what the client believes, so the sequence ends (it must start again)."""
        if self._live.get(entry.key) is entry:
            self._drop(entry, f"was ended when a chunk of it failed ({error})")
            self._remember(entry.key, _Gone(FAILED, self._clock(), str(error)))

    def end_id(self, model: str, sequence_id: SequenceId, how: str = "its client ended it") -> bool:
        """Free a live sequence by id (e.g. its WebSocket closed); whether one was live."""
        entry = self._live.get((model, sequence_id))
        if entry is None:
            return False
        self.end(entry, how)
        return True

    # ---- expiry -------------------------------------------------------------------------------------

    def _idle(self, entry: LiveSequence, now: float) -> bool:
        # A sequence whose chunk is running (or waiting) is in use, however long that takes.
        return now - entry.last_used > self.idle_timeout and not entry.lock.locked()

    def _expire(self, entry: LiveSequence) -> None:
        self._drop(entry, f"expired after {self.idle_timeout:g} s idle")
        self._remember(entry.key, _Gone(EXPIRED, self._clock(), ""))
        metrics.SEQUENCE_EXPIRED.labels(entry.model).inc()

    def expire_idle(self) -> int:
        """Free every sequence idle longer than the timeout; how many."""
        now = self._clock()
        idle = []
        for entry in self._live.values():  # least recently used first: stop at the first one in use lately
            if now - entry.last_used <= self.idle_timeout:
                break
            if not entry.lock.locked():
                idle.append(entry)
        for entry in idle:
            self._expire(entry)
        return len(idle)

    @property
    def reap_interval(self) -> float:
        """How often the reaper looks: a quarter of the timeout, between 50 ms and 1 s."""
        return min(1.0, max(0.05, self.idle_timeout / 4))

    async def reap_forever(self) -> None:
        """The reaper task: expires idle sequences until cancelled."""
        while True:
            await asyncio.sleep(self.reap_interval)
            self.expire_idle()

    def clear(self) -> None:
        """Drop every live sequence (shutdown)."""
        for entry in list(self._live.values()):
            self._drop(entry, "was dropped because the server shut down")

    # ---- bookkeeping ---------------------------------------------------------------------------------

    def _drop(self, entry: LiveSequence, why: str) -> None:
        del self._live[entry.key]
        entry.live = False
        entry.gone = why
        metrics.SEQUENCES_LIVE.labels(entry.model).dec()

    def _remember(self, key: Key, gone: _Gone) -> None:
        if not self.memory:
            return
        self._gone.pop(key, None)
        self._gone[key] = gone
        while len(self._gone) > self.memory:
            self._gone.popitem(last=False)

    def _not_live_message(self, key: Key) -> str:
        model, sequence_id = key
        what = f"sequence {sequence_id!r} of model {model!r}"
        again = "start it again with sequence_start: true (its state is gone)"
        gone = self._gone.get(key)
        if gone is None:
            return (
                f"{what} is not live on this server (never started, or forgotten long ago); "
                "the first chunk of a sequence must have sequence_start: true"
            )
        ago = self._clock() - gone.at
        if gone.how == EXPIRED:
            return (
                f"{what} expired {ago:.1f} s ago after {self.idle_timeout:g} s idle (LSTM_SEQUENCE_IDLE_TIMEOUT); "
                f"{again}"
            )
        if gone.how == FAILED:
            return f"{what} was ended {ago:.1f} s ago when a chunk of it failed ({gone.detail}); {again}"
        return f"{what} ended {ago:.1f} s ago ({gone.detail}); a new sequence needs sequence_start: true"
