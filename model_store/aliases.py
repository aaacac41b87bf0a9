"""The alias file's format, checked strictly: a JSON object of alias names to existing version numbers.

Anything else (garbage JSON, a list, a string or a float such as 2.7 where a version belongs, a
boolean, a number out of range, an alias to a version that does not exist) is damage: the
whole file is refused with what is wrong, never half-read or truncated (2.7 is not served as 2).
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Sequence
from typing import Any

from model_store.errors import DamagedModelError, InvalidNameError
from model_store.names import MAX_VERSION, NAME_PATTERN, check_name

ALIASES_FILE = "aliases.json"
MAX_ALIASES_BYTES = 1 << 20  # a larger alias file is damage, not something to read whole
_shown = reprlib.Repr()  # values quoted from a damaged file stay short in messages
_shown.maxstring = _shown.maxother = 60
_shown.maxlist = 12


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _Duplicate(f"alias {_shown.repr(key)} appears twice")
        found[key] = value
    return found


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return f"a string ({_shown.repr(value)})"
    return f"{_shown.repr(value)}"


def entry_problem(alias: object, version: object, versions: Sequence[int]) -> str | None:
    """What is wrong with one alias entry, or None."""
    try:
        check_name(alias, "alias")  # type: ignore[arg-type]  # JSON keys are strings; the check says so if not
    except InvalidNameError:
        return f"alias name {_shown.repr(alias)} is not valid (expected {NAME_PATTERN})"
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        return f"alias {alias!r} is {_kind(version)}, not a version number (an integer from 1 to {MAX_VERSION})"
    if version not in versions:
        existing = _shown.repr(list(versions))
        return f"alias {alias!r} points at version {version}, which does not exist (versions: {existing})"
    return None


def _load(raw: bytes) -> Any:
    return json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)


def parse(model: str, raw: bytes, versions: Sequence[int]) -> dict[str, int]:
    """The aliases in `raw` (the bytes of aliases.json), or DamagedModelError saying what is wrong."""

    def damaged(problem: str) -> DamagedModelError:
        return DamagedModelError(model, ALIASES_FILE, problem)

    if len(raw) > MAX_ALIASES_BYTES:
        raise damaged(f"larger than {MAX_ALIASES_BYTES} bytes")
    try:
        parsed = _load(raw)
    except _Duplicate as exc:
        raise damaged(str(exc)) from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise damaged(f"not valid JSON ({_shown.repr(str(exc))[1:-1]})") from None
    if not isinstance(parsed, dict):
        raise damaged(f"expected a JSON object of alias names to version numbers, found {_kind(parsed)}")
    for alias, version in parsed.items():
        problem = entry_problem(alias, version, versions)
        if problem is not None:
            raise damaged(problem)
    return dict(parsed)


def salvage(raw: bytes, versions: Sequence[int]) -> dict[str, int]:
    """The valid entries of a damaged alias file (what a repairing set_alias keeps); {} when none can be read."""
    try:
        parsed = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {alias: version for alias, version in parsed.items() if entry_problem(alias, version, versions) is None}


def dump(aliases: dict[str, int]) -> bytes:
    return json.dumps(aliases, sort_keys=True).encode() + b"\n"
