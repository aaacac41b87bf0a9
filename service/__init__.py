"""The inference service: create_app(settings), its settings, and the lstm-serve command."""

from service.app import create_app
from service.config import Settings

__all__ = ["Settings", "create_app"]
