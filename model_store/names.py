"""Validation of model names, alias names and version numbers: nothing that fails here reaches a path."""

from __future__ import annotations

import re

from model_store.errors import InvalidNameError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
MAX_VERSION = 2**31 - 1


def check_name(name: str, what: str = "model name") -> str:
    """Return `name` if it is a valid model or alias name, else raise InvalidNameError."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise InvalidNameError(f"invalid {what} {name!r}: expected {NAME_PATTERN}")
    return name


def check_version(version: int) -> int:
    """Return `version` if it is a positive integer the store can hold, else raise InvalidNameError."""
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise InvalidNameError(f"invalid version {version!r}: expected an integer from 1 to {MAX_VERSION}")
    return version
