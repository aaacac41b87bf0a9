"""ModelStore: the one place that reads and writes the store folder.

Layout (a folder several processes may share)::

    ROOT/NAME/versions/N/{model.pt, manifest.json, ...}   immutable once published
    ROOT/NAME/aliases.json                                 {"production": N, ...}
    ROOT/NAME/next_version                                 the next number to hand out
    ROOT/NAME/.lock                                        serialises writers of NAME
    ROOT/NAME/.staging-*/                                  versions being written (invisible)

A version is staged in a hidden folder on the same file system, fsynced, then renamed into
`versions/` under the model's lock, so readers see all of it or nothing. Numbers are allocated
under the same lock from a counter that only grows, so a deleted number is never reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from model_store import torchscript
from model_store.errors import (
    IntegrityError,
    ModelNotFoundError,
    VersionInUseError,
    VersionNotFoundError,
)
from model_store.manifest import CHECKPOINT_FILE, MANIFEST_FILE, Manifest, TensorSpec
from model_store.names import check_name, check_version, is_version_text

PRODUCTION = "production"
ALIASES_FILE = "aliases.json"
COUNTER_FILE = "next_version"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
# A staging folder this old belongs to a writer that died; it is swept on the next save.
STALE_STAGING_SECONDS = 3600.0
LOCK_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class LoadedModel:
    """A verified, loaded version: its manifest and its TorchScript module."""

    manifest: Manifest
    module: torchscript.ScriptModule


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically: readers see the old bytes or the new, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; readers of a shared store need what open() gives
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class ModelStore:
    """Named models, immutable numbered versions and aliases in one folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # ---- paths -------------------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def _version_dir(self, name: str, version: int) -> Path:
        return self._model_dir(name) / "versions" / str(check_version(version))

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        model_dir = self._model_dir(name)
        (model_dir / "versions").mkdir(parents=True, exist_ok=True)
        with FileLock(str(model_dir / LOCK_FILE), timeout=LOCK_TIMEOUT_SECONDS):
            yield model_dir

    # ---- reading -----------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the models that have at least one version, sorted."""
        if not self.root.is_dir():
            return []
        names = []
        for entry in self.root.iterdir():
            try:
                check_name(entry.name)
            except ValueError:
                continue
            if self.versions(entry.name):
                names.append(entry.name)
        return sorted(names)

    def versions(self, name: str) -> list[int]:
        """Published versions of `name`, ascending; [] when the model does not exist."""
        versions_dir = self._model_dir(name) / "versions"
        if not versions_dir.is_dir():
            return []
        found = []
        for entry in versions_dir.iterdir():
            if is_version_text(entry.name) and not entry.name.startswith("0") and (entry / MANIFEST_FILE).is_file():
                found.append(int(entry.name))
        return sorted(found)

    def manifest(self, name: str, version: int) -> Manifest:
        """The manifest of one published version."""
        path = self._version_dir(name, version) / MANIFEST_FILE
        try:
            return Manifest.from_json(path.read_bytes())
        except FileNotFoundError:
            self._raise_missing(name, version)
            raise  # unreachable: _raise_missing always raises

    def version_file(self, name: str, version: int, filename: str) -> Path:
        """The path of a file the version was published with (e.g. its report picture)."""
        manifest = self.manifest(name, version)
        if filename not in manifest.files:
            raise FileNotFoundError(f"{name} version {version} has no file {filename!r}")
        return self._version_dir(name, version) / filename

    def aliases(self, name: str) -> dict[str, int]:
        """The model's aliases; {} when it has none."""
        path = self._model_dir(name) / ALIASES_FILE
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        return {str(alias): int(version) for alias, version in raw.items()}

    def resolve(self, name: str, ref: int | str | None = None) -> int:
        """The version number that `ref` names.

        None means the serving version (alias `production`, else the newest); an int or a
        string of digits is a version; any other string is an alias.
        """
        versions = self.versions(name)
        if not versions:
            raise ModelNotFoundError(f"model {name!r} not found")
        if ref is None:
            return self.aliases(name).get(PRODUCTION, versions[-1])
        if isinstance(ref, int) or is_version_text(ref):
            version = check_version(int(ref))
            if version not in versions:
                raise VersionNotFoundError(f"model {name!r} has no version {version}; it has {versions}")
            return version
        aliases = self.aliases(name)
        if check_name(ref, "alias") not in aliases:
            raise VersionNotFoundError(f"model {name!r} has no alias {ref!r}; it has {sorted(aliases)}")
        return aliases[ref]

    def load(self, name: str, ref: int | str | None = None) -> LoadedModel:
        """Load a version after checking its checkpoint against the manifest's sha256."""
        version = self.resolve(name, ref)
        manifest = self.manifest(name, version)
        data = (self._version_dir(name, version) / CHECKPOINT_FILE).read_bytes()
        digest = sha256_hex(data)
        if digest != manifest.sha256:
            raise IntegrityError(
                f"{name} version {version}: checkpoint sha256 {digest} does not match the manifest's "
                f"{manifest.sha256}; refusing to load it"
            )
        return LoadedModel(manifest=manifest, module=torchscript.from_bytes(data))

    def _raise_missing(self, name: str, version: int) -> None:
        if not self.versions(name):
            raise ModelNotFoundError(f"model {name!r} not found")
        raise VersionNotFoundError(f"model {name!r} has no version {version}")

    # ---- writing -----------------------------------------------------------------------

    def save(
        self,
        name: str,
        module: torchscript.ScriptModule,
        *,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        extra_files: Mapping[str, bytes] | None = None,
    ) -> Manifest:
        """Publish a new version of `name` whole, or not at all; return its manifest."""
        model_dir = self._model_dir(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_stale(model_dir)
        extra = dict(extra_files or {})
        for filename in extra:
            if filename in (CHECKPOINT_FILE, MANIFEST_FILE) or Path(filename).name != filename or filename[0] == ".":
                raise ValueError(f"invalid extra file name {filename!r}")
        checkpoint = torchscript.to_bytes(module)
        staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            _write_file(staging / CHECKPOINT_FILE, checkpoint)
            for filename, content in extra.items():
                _write_file(staging / filename, content)
            draft = Manifest(
                name=name,
                version=1,
                created_at="",
                sha256=sha256_hex(checkpoint),
                torch_version=torch.__version__,
                inputs=inputs,
                outputs=outputs,
                params=dict(params or {}),
                metrics=dict(metrics or {}),
                data=dict(data or {}),
                files=(CHECKPOINT_FILE, MANIFEST_FILE, *sorted(extra)),
            )
            with self._locked(name):
                version = self._allocate(model_dir)
                manifest = replace(
                    draft, version=version, created_at=datetime.now(UTC).isoformat(timespec="milliseconds")
                )
                _write_file(staging / MANIFEST_FILE, manifest.to_json())
                _fsync_dir(staging)
                # The counter before the rename: on a full disk it fails with nothing published (written after,
                # its ENOSPC reported a failed save of a version that was in the store). A failed rename only
                # skips the number.
                _replace_file(model_dir / COUNTER_FILE, f"{version + 1}\n".encode())
                os.rename(staging, model_dir / "versions" / str(version))
                _fsync_dir(model_dir / "versions")
            return manifest
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _allocate(self, model_dir: Path) -> int:
        """The next version number (caller holds the lock): above the counter and every folder."""
        try:
            counter = int((model_dir / COUNTER_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            counter = 1
        existing = self.versions(model_dir.name)
        return check_version(max(counter, existing[-1] + 1 if existing else 1))

    def _sweep_stale(self, model_dir: Path) -> None:
        now = time.time()
        for entry in model_dir.iterdir():
            if entry.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > STALE_STAGING_SECONDS:
                        shutil.rmtree(entry, ignore_errors=True)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point `alias` at an existing version; the alias file is replaced atomically."""
        check_name(alias, "alias")
        with self._locked(name) as model_dir:
            if version not in self.versions(name):
                self._raise_missing(name, version)
            aliases = self.aliases(name)
            aliases[alias] = version
            _replace_file(model_dir / ALIASES_FILE, json.dumps(aliases, sort_keys=True).encode() + b"\n")

    def remove_alias(self, name: str, alias: str) -> None:
        """Drop `alias`; the model then serves its newest version unless another alias says otherwise."""
        check_name(alias, "alias")
        with self._locked(name) as model_dir:
            aliases = self.aliases(name)
            if aliases.pop(alias, None) is None:
                raise VersionNotFoundError(f"model {name!r} has no alias {alias!r}")
            _replace_file(model_dir / ALIASES_FILE, json.dumps(aliases, sort_keys=True).encode() + b"\n")

    def delete(self, name: str, version: int) -> None:
        """Delete a version; refused while an alias points at it. Its number is never reused."""
        with self._locked(name) as model_dir:
            if version not in self.versions(name):
                self._raise_missing(name, version)
            holders = sorted(alias for alias, target in self.aliases(name).items() if target == version)
            if holders:
                raise VersionInUseError(f"{name} version {version} is aliased by {holders}; point them elsewhere first")
            # Make sure the counter stays past this number even if it was never written.
            counter = self._allocate(model_dir)
            _replace_file(model_dir / COUNTER_FILE, f"{counter}\n".encode())
            trash = model_dir / f"{TRASH_PREFIX}{version}-{uuid.uuid4().hex}"
            os.rename(self._version_dir(name, version), trash)
            _fsync_dir(model_dir / "versions")
        shutil.rmtree(trash, ignore_errors=True)
