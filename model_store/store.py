"""ModelStore: the one place that reads and writes the store folder.

Layout (a folder several processes may share)::

    ROOT/NAME/versions/N/{model.pt, manifest.json, ...}   immutable once published (add_onnx may add ONNX files)
    ROOT/NAME/aliases.json                                 {"production": N, ...}
    ROOT/NAME/next_version                                 the next number to hand out
    ROOT/NAME/.lock                                        serialises writers of NAME
    ROOT/NAME/.staging-*/                                  versions being written (invisible)

A version is staged in a hidden folder on the same file system, fsynced, then renamed into
`versions/` under the model's lock, so readers see all of it or nothing. Numbers are allocated
under the same lock from a counter that only grows, so a deleted number is never reused.

Damage stays with the model it touches: a garbage aliases.json or manifest, a symbolic link or a
file where a folder belongs raise DamagedModelError naming the entry, and `scan()` lists the other
models apart from the damaged ones. Nothing below the root is reached through a symbolic link: every
file is opened component by component with O_NOFOLLOW, so what is read is inside the store. Failures
of the file system itself (read-only, full, unreadable) are StorageError.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from model_store import aliases as alias_file
from model_store import torchscript
from model_store.aliases import ALIASES_FILE
from model_store.errors import (
    DamagedModelError,
    DamagedVersionError,
    IntegrityError,
    InvalidNameError,
    ModelNotFoundError,
    VersionInUseError,
    VersionNotFoundError,
    storage_errors,
)
from model_store.manifest import (
    CHECKPOINT_FILE,
    FORMAT,
    MANIFEST_FILE,
    ONNX_FORMAT,
    ExportedFiles,
    Manifest,
    OnnxExport,
    Pt2Export,
    SequenceSupport,
    TensorSpec,
)
from model_store.names import check_name, check_version, is_version_text
from model_store.safe_files import (
    NOT_A_FOLDER,
    SYMLINK,
    UnsafeEntryError,
    check_file_below,
    entry_kind,
    exists_in,
    read_below,
    scan_below,
)

PRODUCTION = "production"
DAMAGED_ALIASES_FILE = "aliases.json.damaged"  # the last damaged alias file a set_alias replaced, kept to inspect
COUNTER_FILE = "next_version"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
# A staging folder this old belongs to a writer that died; it is swept on the next save.
STALE_STAGING_SECONDS = 3600.0
LOCK_TIMEOUT_SECONDS = 60.0
MAX_MANIFEST_BYTES = 16 << 20  # a larger manifest is damage, not something to read whole


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


MODEL_FOLDER = "the model folder"  # the `path` of a DamagedModelError about the model's folder itself


@dataclass(frozen=True)
class Scan:
    """The store's root as `scan()` found it: usable models, and entries named like models that are damaged."""

    models: list[str]
    damaged: list[DamagedModelError]


@dataclass(frozen=True)
class ModelReport:
    """One model as /models shows it: its readable manifests, its aliases, and whatever of it is damaged."""

    name: str
    manifests: list[Manifest]
    aliases: dict[str, int]  # {} when the alias file is damaged (it is then the first entry of `damaged`)
    damaged: list[DamagedModelError] = field(default_factory=list)


def _discard(path: Path) -> None:
    """Remove whatever is at `path` (a folder, a file or a link; the link itself, never its target)."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


class ModelStore:
    """Named models, immutable numbered versions and aliases in one folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        """The store's folder, for messages."""
        return str(self.root)

    def changes(self) -> None:
        """None: a folder tells no one of its changes; readers poll it."""
        return None

    def close(self) -> None:
        """Nothing to let go of: every call opens and closes its own files."""

    # ---- paths and safe reading ---------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def _version_dir(self, name: str, version: int) -> Path:
        return self._model_dir(name) / "versions" / str(check_version(version))

    @staticmethod
    def _damage(name: str, parts: Sequence[str], problem: str) -> DamagedModelError:
        """The DamagedModelError for root/name/parts... (parts relative to the model's folder)."""
        version = None
        if len(parts) >= 2 and parts[0] == "versions" and is_version_text(parts[1]) and parts[1][0] != "0":
            version = int(parts[1])
        if version is not None:
            return DamagedVersionError(name, "/".join(parts), problem, version)
        return DamagedModelError(name, "/".join(parts) or MODEL_FOLDER, problem)

    def _unsafe(self, name: str, exc: UnsafeEntryError) -> DamagedModelError:
        return self._damage(name, exc.parts[1 : exc.depth + 1], exc.problem)  # parts[0] is the model's name

    def _read(self, name: str, *parts: str, limit: int | None = None) -> bytes:
        """The bytes of NAME/parts..., reached without following a link; FileNotFoundError when missing."""
        try:
            data = read_below(self.root, (check_name(name), *parts), limit)
        except UnsafeEntryError as exc:
            raise self._unsafe(name, exc) from None
        if limit is not None and len(data) > limit:
            raise self._damage(name, parts, f"larger than {limit} bytes")
        return data

    @contextlib.contextmanager
    def _scan_dir(self, name: str, *parts: str) -> Iterator[tuple[int, list[os.DirEntry[str]]]]:
        try:
            with scan_below(self.root, (check_name(name), *parts)) as found:
                yield found
        except UnsafeEntryError as exc:
            raise self._unsafe(name, exc) from None

    def _writable_model_dir(self, name: str) -> Path:
        """The model's folder for a writer, refused when it (or what a writer opens in it) is a link or a file."""
        model_dir = self._model_dir(name)
        for entry, expected in ((model_dir, "dir"), (model_dir / "versions", "dir"), (model_dir / LOCK_FILE, "file")):
            try:
                mode = os.lstat(entry).st_mode
            except FileNotFoundError:
                continue
            parts = entry.relative_to(model_dir).parts
            if stat.S_ISLNK(mode):
                raise self._damage(name, parts, SYMLINK)  # not followed, whatever the lock library does
            if expected == "dir" and not stat.S_ISDIR(mode):
                raise self._damage(name, parts, NOT_A_FOLDER)
        return model_dir

    @contextlib.contextmanager
    def _locked(self, name: str, create: bool = False) -> Iterator[Path]:
        """Hold the model's lock; only a save creates the model's folder (an alias or delete of an unknown
        model is a ModelNotFoundError, and leaves nothing behind)."""
        model_dir = self._writable_model_dir(name)
        if create:
            (model_dir / "versions").mkdir(parents=True, exist_ok=True)
        elif not self.versions(name):
            raise ModelNotFoundError(f"model {name!r} not found")
        with FileLock(str(model_dir / LOCK_FILE), timeout=LOCK_TIMEOUT_SECONDS):
            yield model_dir

    # ---- reading -----------------------------------------------------------------------

    def scan(self) -> Scan:
        """The models that have at least one version, and the entries named like models that are damaged."""
        with storage_errors("listing the store's models"):
            try:
                with os.scandir(self.root) as found:  # the root itself may be a link
                    entries = sorted(found, key=lambda entry: entry.name)
            except (FileNotFoundError, NotADirectoryError):
                return Scan([], [])
            models, damaged = [], []
            for entry in entries:
                try:
                    check_name(entry.name)
                except InvalidNameError:
                    continue  # not ours (lost+found, .jobs, notes)
                problem = entry_kind(entry)
                if problem is not None:
                    damaged.append(self._damage(entry.name, (), problem))
                    continue
                try:
                    if self.versions(entry.name):
                        models.append(entry.name)
                except DamagedModelError as exc:
                    damaged.append(exc)
            return Scan(models, damaged)

    def models(self) -> list[str]:
        """Names of the usable models that have at least one version, sorted (damaged folders are left out)."""
        return self.scan().models

    def versions(self, name: str) -> list[int]:
        """Published versions of `name`, ascending; [] when the model does not exist.

        A version is a real folder named by its number (no link, no leading zero) holding a manifest.json.
        """
        check_name(name)
        with storage_errors(f"listing the versions of {name!r}"):
            try:
                with self._scan_dir(name, "versions") as (fd, entries):
                    return sorted(int(entry.name) for entry in entries if self._is_version(fd, entry))
            except FileNotFoundError:
                return []

    @staticmethod
    def _is_version(versions_fd: int, entry: os.DirEntry[str]) -> bool:
        return (
            is_version_text(entry.name)
            and not entry.name.startswith("0")
            and entry_kind(entry) is None
            and exists_in(versions_fd, f"{entry.name}/{MANIFEST_FILE}")
        )

    def manifest(self, name: str, version: int) -> Manifest:
        """The manifest of one published version; DamagedModelError when it is not a valid manifest."""
        check_version(version)
        with storage_errors(f"reading the manifest of {name!r} version {version}"):
            try:
                raw = self._read(name, "versions", str(version), MANIFEST_FILE, limit=MAX_MANIFEST_BYTES)
            except FileNotFoundError:
                self._raise_missing(name, version)
                raise  # unreachable: _raise_missing always raises
        try:
            return Manifest.from_json(raw)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            problem = f"not a valid manifest ({type(exc).__name__}: {str(exc)[:120]})"
            raise self._damage(name, ("versions", str(version), MANIFEST_FILE), problem) from None

    def _file_parts(self, name: str, version: int, filename: str) -> tuple[str, ...]:
        manifest = self.manifest(name, version)
        if filename not in manifest.files or not plain_name(filename):
            raise FileNotFoundError(f"{name} version {version} has no file {filename!r}")
        return ("versions", str(version), filename)

    def version_file(self, name: str, version: int, filename: str) -> Path:
        """The path of a file the version was published with, checked to be a regular file inside the store."""
        parts = self._file_parts(name, version, filename)
        with storage_errors(f"reading {filename} of {name!r} version {version}"):
            try:
                check_file_below(self.root, (name, *parts))
            except UnsafeEntryError as exc:
                raise self._unsafe(name, exc) from None
        return self._model_dir(name).joinpath(*parts)

    def read_version_file(self, name: str, version: int, filename: str) -> bytes:
        """The bytes of a file the version was published with (e.g. its report picture), read inside the store."""
        parts = self._file_parts(name, version, filename)
        with storage_errors(f"reading {filename} of {name!r} version {version}"):
            return self._read(name, *parts)

    def _alias_bytes(self, name: str) -> bytes | None:
        with storage_errors(f"reading the aliases of {name!r}"):
            try:
                return self._read(name, ALIASES_FILE, limit=alias_file.MAX_ALIASES_BYTES)
            except FileNotFoundError:
                return None

    def _aliases(self, name: str, versions: Sequence[int]) -> dict[str, int]:
        raw = self._alias_bytes(name)
        return {} if raw is None else alias_file.parse(name, raw, versions)

    def aliases(self, name: str) -> dict[str, int]:
        """The model's aliases; {} when it has none; DamagedModelError when aliases.json is not valid."""
        return self._aliases(name, self.versions(name))

    def inspect(self, name: str) -> ModelReport:
        """The model's readable manifests and aliases, and each damaged part of it instead of an exception."""
        versions = self.versions(name)
        damaged = []
        try:
            aliases = self._aliases(name, versions)
        except DamagedModelError as exc:
            aliases = {}
            damaged.append(exc)
        with storage_errors(f"listing the versions of {name!r}"), contextlib.suppress(FileNotFoundError):
            with self._scan_dir(name, "versions") as (fd, entries):
                listed = {str(version) for version in versions}
                for entry in sorted(entries, key=lambda entry: entry.name):
                    if entry.name not in listed:
                        damaged.append(self._damage(name, ("versions", entry.name), _not_a_version(fd, entry)))
        manifests = []
        for version in versions:
            try:
                manifests.append(self.manifest(name, version))
            except DamagedModelError as exc:
                damaged.append(exc)
            except (ModelNotFoundError, VersionNotFoundError):
                continue  # deleted between listing and reading
        return ModelReport(name=name, manifests=manifests, aliases=aliases, damaged=damaged)

    def resolve(self, name: str, ref: int | str | None = None) -> int:
        """The version number that `ref` names.

        None means the serving version (alias `production`, else the newest); an int or a
        string of digits is a version; any other string is an alias.
        """
        versions = self.versions(name)
        if not versions:
            raise ModelNotFoundError(f"model {name!r} not found")
        if ref is None:
            return self._aliases(name, versions).get(PRODUCTION, versions[-1])
        if isinstance(ref, int) or is_version_text(ref):
            version = check_version(int(ref))
            if version not in versions:
                raise VersionNotFoundError(f"model {name!r} has no version {version}; it has {versions}")
            return version
        check_name(ref, "alias")
        aliases = self._aliases(name, versions)
        if ref not in aliases:
            raise VersionNotFoundError(f"model {name!r} has no alias {ref!r}; it has {sorted(aliases)}")
        return aliases[ref]

    def load(self, name: str, ref: int | str | None = None) -> LoadedModel:
        """Load a version after checking its checkpoint against the manifest's sha256; IntegrityError for a version
        without one (an imported ONNX model: read its file with `read_checked`)."""
        version = self.resolve(name, ref)
        manifest = self.manifest(name, version)
        if not manifest.has_checkpoint:
            raise IntegrityError(no_checkpoint(name, version))
        with storage_errors(f"reading the checkpoint of {name!r} version {version}"):
            try:
                data = self._read(name, "versions", str(version), CHECKPOINT_FILE)
            except FileNotFoundError:
                raise self._damage(name, ("versions", str(version), CHECKPOINT_FILE), "missing") from None
        digest = sha256_hex(data)
        if digest != manifest.sha256:
            raise IntegrityError(
                f"{name} version {version} cannot be served: checkpoint sha256 {digest} does not match the "
                f"manifest's {manifest.sha256}; refusing to load it"
            )
        try:
            module = torchscript.from_bytes(data)
        except Exception as exc:  # whatever a hash-matching but hostile archive makes the loader raise
            raise IntegrityError(f"{name} version {version} cannot be served: {exc}") from None
        return LoadedModel(manifest=manifest, module=module)

    def read_checked(self, name: str, version: int, filename: str, sha256: str) -> bytes:
        """The bytes of a file the version was published with, refused (IntegrityError) unless they match `sha256`
        (the manifest's checksum of that file, e.g. its ONNX model's)."""
        try:
            data = self.read_version_file(name, version, filename)
        except FileNotFoundError:
            raise self._damage(name, ("versions", str(version), filename), "missing") from None
        digest = sha256_hex(data)
        if digest != sha256:
            raise IntegrityError(
                f"{name} version {version}: {filename} sha256 {digest} does not match the manifest's {sha256}; "
                "refusing to load it"
            )
        return data

    def _raise_missing(self, name: str, version: int) -> None:
        if not self.versions(name):
            raise ModelNotFoundError(f"model {name!r} not found")
        raise VersionNotFoundError(f"model {name!r} has no version {version}")

    # ---- writing -----------------------------------------------------------------------

    def save(
        self,
        name: str,
        module: torchscript.ScriptModule | None,
        *,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        extra_files: Mapping[str, bytes] | None = None,
        sequence: SequenceSupport | None = None,
        onnx: OnnxExport | None = None,
        pt2: Pt2Export | None = None,
    ) -> Manifest:
        """Publish a new version of `name` whole, or not at all; return its manifest. `sequence` says how the
        module carries state between chunks (None: it serves one-shot requests only); `onnx` and `pt2` describe its
        ONNX and `.pt2` files, which are among `extra_files` with the checksums they give (or why there are none).
        `module` None publishes an ONNX model without a checkpoint (an import): `onnx` must name its file."""
        extra = dict(extra_files or {})
        check_new_files(module is not None, extra, onnx, pt2, sequence)
        with storage_errors(f"saving a version of {name!r}"):
            return self._save(name, module, inputs, outputs, params, metrics, data, extra, sequence, onnx, pt2)

    def _save(
        self,
        name: str,
        module: torchscript.ScriptModule | None,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        params: Mapping[str, Any] | None,
        metrics: Mapping[str, Any] | None,
        data: Mapping[str, Any] | None,
        extra: dict[str, bytes],
        sequence: SequenceSupport | None = None,
        onnx: OnnxExport | None = None,
        pt2: Pt2Export | None = None,
    ) -> Manifest:
        model_dir = self._writable_model_dir(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_stale(model_dir)
        # Without a module (an imported ONNX model) the ONNX file is the version's model and its sha256 the manifest's.
        checkpoint = None if module is None else torchscript.to_bytes(module)
        digest = sha256_hex(checkpoint) if checkpoint is not None else onnx.sha256 if onnx is not None else None
        assert digest is not None, "save checked that a version without a module has its ONNX file"
        staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            if checkpoint is not None:
                _write_file(staging / CHECKPOINT_FILE, checkpoint)
            for filename, content in extra.items():
                _write_file(staging / filename, content)
            draft = Manifest(
                name=name,
                version=1,
                created_at="",
                sha256=digest,
                torch_version=torch.__version__,
                inputs=inputs,
                outputs=outputs,
                params=dict(params or {}),
                metrics=dict(metrics or {}),
                data=dict(data or {}),
                files=(*([CHECKPOINT_FILE] if checkpoint is not None else []), MANIFEST_FILE, *sorted(extra)),
                format=FORMAT if checkpoint is not None else ONNX_FORMAT,
                sequence=sequence,
                onnx=onnx,
                pt2=pt2,
            )
            with self._locked(name, create=True):
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

    def add_onnx(
        self,
        name: str,
        version: int,
        onnx: OnnxExport,
        files: Mapping[str, bytes],
        checkpoint: str,
        pt2: Pt2Export | None = None,
    ) -> Manifest:
        """Give a published version ONNX files (or record why it has none), and `.pt2` files if `pt2` is given (else
        it keeps those it has), leaving its checkpoint as it is.

        `checkpoint` is the sha256 of the checkpoint the files were exported from: the manifest must still name it.
        Under the model's lock the files are written first, each replacing any old one atomically, then the
        manifest is replaced atomically, so a reader sees the old manifest or the new one with all its files.
        """
        check_version(version)
        check_new_files(True, dict(files), onnx, pt2, None)
        with storage_errors(f"adding ONNX files to {name!r} version {version}"), self._locked(name):
            manifest = self.manifest(name, version)
            if manifest.sha256 != checkpoint:
                raise IntegrityError(
                    f"{name} version {version}'s checkpoint is {manifest.sha256}, not the {checkpoint} exported from"
                )
            version_dir = self._version_dir(name, version)
            for filename, content in files.items():
                _replace_file(version_dir / filename, content)
            updated, stale = with_exports(manifest, files, onnx, pt2)
            _replace_file(version_dir / MANIFEST_FILE, updated.to_json())
            for filename in stale:  # files an older export listed that this one does not: unlisted now, so unused
                with contextlib.suppress(FileNotFoundError):
                    (version_dir / filename).unlink()
            return updated

    def _allocate(self, model_dir: Path) -> int:
        """The next version number (caller holds the lock): above the counter and every folder."""
        try:
            counter = int(self._read(model_dir.name, COUNTER_FILE, limit=64).strip())
        except (FileNotFoundError, ValueError, DamagedModelError):
            counter = 1  # a damaged counter: the published versions below still keep their numbers unique
        existing = self.versions(model_dir.name)
        return check_version(max(counter, existing[-1] + 1 if existing else 1))

    def _sweep_stale(self, model_dir: Path) -> None:
        now = time.time()
        for entry in model_dir.iterdir():
            if entry.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > STALE_STAGING_SECONDS:
                        shutil.rmtree(entry, ignore_errors=True)

    def set_alias(self, name: str, alias: str, version: int) -> DamagedModelError | None:
        """Point `alias` at an existing version; the alias file is replaced atomically.

        A damaged alias file is repaired: its valid entries are kept, the damaged file is kept beside it as
        aliases.json.damaged, and the damage it replaced is returned (else None).
        """
        check_name(alias, "alias")
        check_version(version)
        with storage_errors(f"setting alias {alias!r} of {name!r}"), self._locked(name) as model_dir:
            versions = self.versions(name)
            if version not in versions:
                self._raise_missing(name, version)
            replaced = None
            try:
                aliases = self._aliases(name, versions)
            except DamagedModelError as damage:
                if damage.path != ALIASES_FILE:
                    raise
                replaced, aliases = damage, self._salvage(name, versions)
                _discard(model_dir / DAMAGED_ALIASES_FILE)
                os.replace(model_dir / ALIASES_FILE, model_dir / DAMAGED_ALIASES_FILE)
            aliases[alias] = version
            _replace_file(model_dir / ALIASES_FILE, alias_file.dump(aliases))
            return replaced

    def _salvage(self, name: str, versions: Sequence[int]) -> dict[str, int]:
        try:
            raw = self._alias_bytes(name)
        except DamagedModelError:  # a link or a folder: nothing in it to keep
            return {}
        return {} if raw is None else alias_file.salvage(raw, versions)

    def remove_alias(self, name: str, alias: str) -> None:
        """Drop `alias`; the model then serves its newest version unless another alias says otherwise."""
        check_name(alias, "alias")
        with storage_errors(f"removing alias {alias!r} of {name!r}"), self._locked(name) as model_dir:
            aliases = self.aliases(name)
            if aliases.pop(alias, None) is None:
                raise VersionNotFoundError(f"model {name!r} has no alias {alias!r}; it has {sorted(aliases)}")
            _replace_file(model_dir / ALIASES_FILE, alias_file.dump(aliases))

    def delete(self, name: str, version: int) -> None:
        """Delete a version; refused while an alias points at it. Its number is never reused."""
        check_version(version)
        with storage_errors(f"deleting {name!r} version {version}"):
            with self._locked(name) as model_dir:
                versions = self.versions(name)
                if version not in versions:
                    self._raise_missing(name, version)
                holders = sorted(alias for alias, target in self._aliases(name, versions).items() if target == version)
                if holders:
                    raise VersionInUseError(
                        f"{name} version {version} is aliased by {holders}; point them elsewhere first"
                    )
                # Make sure the counter stays past this number even if it was never written.
                counter = self._allocate(model_dir)
                _replace_file(model_dir / COUNTER_FILE, f"{counter}\n".encode())
                trash = model_dir / f"{TRASH_PREFIX}{version}-{uuid.uuid4().hex}"
                os.rename(self._version_dir(name, version), trash)
                _fsync_dir(model_dir / "versions")
            shutil.rmtree(trash, ignore_errors=True)


def check_extra_name(filename: str) -> None:
    if filename in (CHECKPOINT_FILE, MANIFEST_FILE) or not plain_name(filename) or filename[0] == ".":
        raise ValueError(f"invalid extra file name {filename!r}")


def no_checkpoint(name: str, version: int) -> str:
    """Why `load` refuses a version without a TorchScript checkpoint."""
    return (
        f"{name} version {version} has no TorchScript checkpoint: it is an imported ONNX model, which only "
        "ONNX Runtime serves"
    )


def check_new_files(
    has_checkpoint: bool,
    files: Mapping[str, bytes],
    onnx: OnnxExport | None,
    pt2: Pt2Export | None,
    sequence: SequenceSupport | None,
) -> None:
    """What every store checks before it writes a version's files (ValueError): plain names, the checksums the
    ONNX and `.pt2` entries give, and, for a version without a checkpoint, the ONNX file that replaces it."""
    for filename in files:
        check_extra_name(filename)
    check_onnx_files(onnx, files)
    check_onnx_files(pt2, files)
    if not has_checkpoint and (onnx is None or onnx.file is None or onnx.sha256 is None or sequence is not None):
        raise ValueError("a version without a TorchScript checkpoint needs its ONNX file, and carries no sequence")


def with_exports(
    manifest: Manifest, files: Mapping[str, bytes], onnx: OnnxExport, pt2: Pt2Export | None
) -> tuple[Manifest, set[str]]:
    """`manifest` with the exported `files` of a re-export (`pt2` None keeps the `.pt2` files it has), and the
    files it listed that the new one does not (unused from then on)."""
    replaced = [manifest.onnx, manifest.pt2 if pt2 is not None else None]
    stale = {f for entry in replaced if entry is not None for f in entry.checksums()} - set(files)
    kept = [f for f in manifest.files if f not in stale and f not in files]
    return replace(manifest, files=(*kept, *sorted(files)), onnx=onnx, pt2=pt2 or manifest.pt2), stale


def check_onnx_files(entry: ExportedFiles | None, files: Mapping[str, bytes]) -> None:
    """Every file the ONNX (or `.pt2`) entry names is among `files` with the checksum the entry gives."""
    kind = "ONNX" if not isinstance(entry, Pt2Export) else ".pt2"
    for filename, digest in ({} if entry is None else entry.checksums()).items():
        if filename not in files:
            raise ValueError(f"the {kind} entry names {filename!r}, which is not among the files given")
        if sha256_hex(files[filename]) != digest:
            raise ValueError(f"{filename!r} does not have the sha256 the {kind} entry gives")


def plain_name(filename: str) -> bool:
    """A file name with no folder part: what a version may hold beside its checkpoint."""
    return bool(filename) and filename not in (".", "..") and "/" not in filename and "\0" not in filename


def _not_a_version(versions_fd: int, entry: os.DirEntry[str]) -> str:
    """Why an entry of versions/ is not a version."""
    kind = entry_kind(entry)
    if kind is not None:
        return kind
    if not is_version_text(entry.name) or entry.name.startswith("0"):
        return "not named by a version number (1 to 2147483647, no leading zero); ignored"
    if not exists_in(versions_fd, f"{entry.name}/{MANIFEST_FILE}"):
        return f"no {MANIFEST_FILE}; not a version"
    return "not a version"
