"""Validation of model names, alias names and version numbers: nothing that fails here reaches a path."""

from __future__ import annotations

import re
import reprlib

from model_store.errors import InvalidNameError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
MAX_VERSION = 2**31 - 1
_shown = reprlib.Repr()  # a client's 10 MB "name" must not come back in full in the error message
_shown.maxstring = _shown.maxother = 80


def check_name(name: str, what: str = "model name") -> str:
    """Return `name` if it is a valid model or alias name, else raise InvalidNameError."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise InvalidNameError(f"invalid {what} {_shown.repr(name)}: expected {NAME_PATTERN}")
    return name


def is_version_text(text: str) -> bool:
    """Whether `text` can be a version number: ASCII digits only (str.isdigit() accepts '²', which int() refuses)
    and no longer than MAX_VERSION."""
    return text.isascii() and text.isdigit() and len(text) <= len(str(MAX_VERSION))


def check_version(version: int) -> int:
    """Return `version` if it is a positive integer the store can hold, else raise InvalidNameError."""
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise InvalidNameError(f"invalid version {_shown.repr(version)}: expected an integer from 1 to {MAX_VERSION}")
    return version
