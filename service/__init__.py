"""The inference service: create_app(settings), its settings, and the lstm-serve command.

create_app loads on first use: `lstm-serve --workers N` runs a supervisor process that only
spawns and watches workers, and importing torch there would add about a second and a half to
every start before any worker begins (docs/benchmarks.md, start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.config import Settings

if TYPE_CHECKING:
    from service.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from service.app import create_app

        return create_app
    raise AttributeError(f"module 'service' has no attribute {name!r}")


__all__ = ["Settings", "create_app"]
