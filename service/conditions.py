"""A failing condition that is logged once when it starts or changes, and once when it clears: not every tick."""

from __future__ import annotations

import logging


class Condition:
    """What a periodic task (the store poll, the job runner, /metrics) last found wrong, if anything."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log, self.what = log, what
        self.problem: str | None = None

    def failing(self, problem: str, *, traceback: bool = False) -> None:
        """Note the problem; logged only when it differs from the last one (with the traceback if asked)."""
        if problem != self.problem:
            self.log.error("%s: %s", self.what, problem, exc_info=traceback)
            self.problem = problem

    def ok(self) -> None:
        """The check passed: logged once if it had been failing."""
        if self.problem is not None:
            self.log.warning("%s: recovered (was: %s)", self.what, self.problem)
            self.problem = None
