"""CachedBlobs: a replica's read-through copy of the objects it has read, in a local folder, checked on every hit.

Objects never change (a key names its content), so a copy never goes stale and needs no invalidation: a replica
that has loaded a version once can load it again (after a restart of the service, or while S3 is away) from its
own disk. Each copy is written to a temporary name and renamed (FolderBlobs), so a crash leaves no half copy,
and each hit is checked against its key: a copy damaged on disk is dropped and fetched again, never served.
The folder grows with the objects read and is never pruned: it is at most the size of the versions served
(delete it to start over; it refills on the next reads).
"""

from __future__ import annotations

import contextlib
import logging
import os

from model_store.blobs import Blobs, FolderBlobs, check_digest
from model_store.errors import IntegrityError, StoreError

log = logging.getLogger("model_store.blob_cache")


class CachedBlobs:
    """`blobs`, read through a FolderBlobs copy in `folder`; writes go to `blobs` only."""

    def __init__(self, blobs: Blobs, folder: str | os.PathLike[str]) -> None:
        self.blobs = blobs
        self.copies = FolderBlobs(folder)

    def put(self, key: str, data: bytes) -> None:
        self.blobs.put(key, data)

    def get(self, key: str) -> bytes:
        """The object's bytes, from the local copy when it is there and intact, else from `blobs` (then copied)."""
        try:
            return check_digest(key, self.copies.get(key), f"the cache {self.copies.describe()}")
        except FileNotFoundError:
            pass
        except IntegrityError as exc:
            log.warning("%s; fetching it again from %s", exc, self.blobs.describe())
            with contextlib.suppress(OSError):
                os.unlink(self.copies.root / key)
        except StoreError as exc:  # an unreadable cache folder: the object is still in `blobs`
            log.warning("cannot read the cached %s (%s); fetching it from %s", key, exc, self.blobs.describe())
        data = check_digest(key, self.blobs.get(key), self.blobs.describe())
        try:
            self.copies.put(key, data)
        except StoreError as exc:  # a full or read-only cache disk costs a fetch next time, nothing more
            log.warning("cannot keep a copy of %s in the cache (%s)", key, exc)
        return data

    def describe(self) -> str:
        return f"{self.blobs.describe()} (cached in {self.copies.describe()})"
