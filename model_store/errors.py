"""The store's exceptions: what went wrong, in domain terms (no HTTP here)."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of everything the model store raises."""


class InvalidNameError(StoreError, ValueError):
    """A model or alias name, or a version, that the store will not accept."""


class ModelNotFoundError(StoreError, LookupError):
    """No model of that name is in the store."""


class VersionNotFoundError(StoreError, LookupError):
    """The model exists but not that version (or alias)."""


class IntegrityError(StoreError):
    """A checkpoint whose bytes do not match its manifest's sha256, or that is not TorchScript."""


class VersionInUseError(StoreError):
    """A version cannot be deleted while an alias points at it."""
