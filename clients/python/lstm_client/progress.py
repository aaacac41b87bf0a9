"""A plain-text progress line for training jobs (no dependency): redrawn on a terminal, sparse lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

WIDTH = 30
LOG_EVERY_SECONDS = 5.0


class Progress:
    """Shows epoch/max_epochs and the loss of job snapshots on `stream` (stderr by default)."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty()
        self._last = ""
        self._logged_at = 0.0

    def show(self, job: dict[str, Any]) -> None:
        if not self.enabled:
            return
        state = job["progress"]
        total = max(int(state["max_epochs"]), 1)
        epoch = min(int(state["epoch"]), total)
        filled = WIDTH * epoch // total
        loss = "" if state["loss"] is None else f" loss {state['loss']:.2e}"
        line = f"{job['status']:9} [{'#' * filled}{'.' * (WIDTH - filled)}] {epoch}/{total} epochs{loss}"
        if line == self._last:
            return
        now = time.monotonic()
        if self.terminal:
            self.stream.write("\r" + line.ljust(len(self._last)))
        elif now - self._logged_at >= LOG_EVERY_SECONDS or job["status"] in ("succeeded", "failed", "cancelled"):
            self.stream.write(line + "\n")  # a log file gets a line every few seconds, not a redraw per epoch
            self._logged_at = now
        else:
            return
        self.stream.flush()
        self._last = line

    def close(self) -> None:
        """End the redrawn line (once; closing again does nothing)."""
        if self.enabled and self.terminal and self._last:
            self.stream.write("\n")
            self.stream.flush()
        self._last = ""
