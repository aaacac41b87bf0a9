"""The store's exceptions: what went wrong, in domain terms (no HTTP here)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator


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


class DamagedModelError(StoreError):
    """A file or folder of a model that is not what the store writes (garbage JSON, a symbolic link, a file
    where a folder belongs): that model, or that version, cannot be used until it is repaired.

    `model` is the model's name, `path` the damaged entry relative to the model's folder (or to the store
    for the model folder itself), `problem` what is wrong with it; `version` is set when only one version
    is damaged.
    """

    def __init__(self, model: str, path: str, problem: str, version: int | None = None) -> None:
        self.model, self.path, self.problem, self.version = model, path, problem, version
        super().__init__(f"model {model!r} is damaged: {path}: {problem}")

    @property
    def reason(self) -> str:
        """`path: problem`, as /models shows it."""
        return f"{self.path}: {self.problem}"


class DamagedVersionError(DamagedModelError):
    """Only one version is damaged (its manifest.json is garbage, its folder a link...); `version` says which."""

    version: int


class StorageError(StoreError, OSError):
    """The storage under the store failed (read-only, full, unreadable, I/O error); `errno` is the OS's.

    An OSError too, so callers that handle OSError (e.g. a full disk while saving) keep working.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        if code is None:
            super().__init__(message)
        else:
            super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class StorageFullError(StorageError):
    """No space left, or over a quota (ENOSPC, EDQUOT)."""


FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_error(doing: str, cause: str, code: int | None = None) -> StorageError:
    """A StorageError (or StorageFullError for a full disk) saying what failed and why, without server paths."""
    kind = StorageFullError if code in FULL_ERRNOS else StorageError
    return kind(f"storage failure while {doing}: {cause}", code)


def from_os_error(exc: OSError, doing: str) -> StorageError:
    """The StorageError for an OSError: its strerror and errno name, not its file name (a server path)."""
    if isinstance(exc, StorageError):
        return exc
    if exc.errno is None:  # e.g. filelock's Timeout: another writer held the model's lock all along
        return storage_error(doing, "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return storage_error(doing, f"{os.strerror(exc.errno)} ({name})", exc.errno)


@contextlib.contextmanager
def storage_errors(doing: str) -> Iterator[None]:
    """Turn an OSError from the file system into a StorageError naming `doing`.

    FileNotFoundError passes: to the store a missing file is an answer (no such version), not a failure.
    """
    try:
        yield
    except (StoreError, FileNotFoundError):
        raise
    except OSError as exc:
        raise from_os_error(exc, doing) from exc
