"""Blobs: where a database-backed store keeps the bytes of its versions, as immutable content-addressed objects.

A version's files (checkpoint, ONNX models, report) are uploaded under keys named by their sha256 before the
row that publishes the version is committed: the commit is the publish, so a reader never finds a row whose
objects are not all there, and an upload that was never committed is an unreferenced object, never a version.
Because a key names its content, a put of a key that exists is a no-op, objects are never rewritten, and a
replica may cache any object it has read for good (checked against its key on every read).

Backends: `FolderBlobs` (a folder every replica mounts) and `S3Blobs` (model_store/s3_blobs.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from model_store.errors import IntegrityError, storage_errors

KEY_PREFIX = "sha256/"


def key_of(sha256: str) -> str:
    """The key of the object whose content has this sha256 (hex)."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return KEY_PREFIX + sha256


class Blobs(Protocol):
    """Immutable objects by key. Failures of the backend itself (unreachable, denied, full) are StorageError."""

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` whole or not at all; a no-op when the key exists (keys name their content)."""

    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is no object under `key`."""

    def describe(self) -> str:
        """Where the objects are, for messages (e.g. 's3://bucket/prefix', '/srv/store/objects')."""


class FolderBlobs:
    """Objects as files below a folder, each written to a temporary name, fsynced and renamed into place."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not key.startswith(KEY_PREFIX):
            raise ValueError(f"not an object key: {key!r}")
        key_of(key.removeprefix(KEY_PREFIX))  # the rest must be a digest: no '/', no '..'
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with storage_errors(f"writing object {key} to {self.root}"):
            if path.exists():
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.rename(temporary, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise

    def get(self, key: str) -> bytes:
        path = self._path(key)
        with storage_errors(f"reading object {key} from {self.root}"):
            return path.read_bytes()

    def describe(self) -> str:
        return str(self.root)


def check_digest(key: str, data: bytes, where: str) -> bytes:
    """`data`, refused (IntegrityError) unless its sha256 is the one its key names."""

    digest = hashlib.sha256(data).hexdigest()
    if KEY_PREFIX + digest != key:
        raise IntegrityError(f"object {key} read from {where} has sha256 {digest}; refusing it")
    return data
