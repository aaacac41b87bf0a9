"""The model repository: list, inspect, report picture, promote/roll back, remove an alias, delete a version.

Plain Python over the store and the predictor (no web framework), for the /models routes and later the
OIP model-repository extension. Blocking store calls run off the event loop; a change is followed by a
refresh, so this worker serves it at once and the others on their next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio.to_thread

import model_store
from service.config import Settings
from service.errors import ConflictError, NotReadyError
from service.importer import ImportFormat, Promote, run_import
from service.predictor import Predictor
from service.schemas import (
    AliasSet,
    DamagedEntry,
    ImportedVersion,
    LoadError,
    ModelListing,
    ModelSummary,
    RepositoryModel,
    VersionManifest,
    VersionSummary,
)

log = logging.getLogger("service.models")


class Repository:
    """The store's models as this worker sees them, and the changes a manager makes to them."""

    def __init__(self, store: model_store.Store, predictor: Predictor, refresh: Callable[[], Awaitable[None]]) -> None:
        self.store = store
        self.predictor = predictor
        self._refresh = refresh

    # ---- reading -------------------------------------------------------------------------------------

    async def listing(self) -> ModelListing:
        """Every model with its versions (params, metrics, sha256), aliases, serving version and damaged parts,
        and the entries named like models that cannot be used."""
        return await anyio.to_thread.run_sync(self._listing)

    def _listing(self) -> ModelListing:
        scan = self.store.scan()
        models, damaged = [], list(scan.damaged)
        for name in scan.models:
            try:
                models.append(self._summary(name))
            except model_store.DamagedModelError as exc:  # damaged since the scan (e.g. its folder replaced by a link)
                damaged.append(exc)
            except model_store.ModelNotFoundError:
                continue  # deleted since the scan
        return ModelListing(
            models=models, damaged=[DamagedEntry(name=found.model, error=found.reason) for found in damaged]
        )

    # ---- the OIP model repository extension (index, load, unload) --------------------------------------

    async def index(self, ready_only: bool) -> list[RepositoryModel]:
        """Every version in the store: READY when this worker has it loaded (serving, or cached after a request
        named it), else UNAVAILABLE with the reason; only the READY ones with `ready_only`."""
        return await anyio.to_thread.run_sync(self._index, ready_only)

    def _index(self, ready_only: bool) -> list[RepositoryModel]:
        entries = []
        for name in self.store.scan().models:
            try:
                versions = self.store.versions(name)
            except model_store.StoreError:
                continue  # damaged or deleted since the scan: /models shows why
            for version in versions:
                loaded = self.predictor.cached(name, version) is not None
                if ready_only and not loaded:
                    continue
                reason = "" if loaded else "not loaded in this worker; a request that names it loads it"
                state: Literal["READY", "UNAVAILABLE"] = "READY" if loaded else "UNAVAILABLE"
                entries.append(RepositoryModel(name=name, version=str(version), state=state, reason=reason))
        return entries

    async def load(self, name: str) -> None:
        """Triton's load: read the store now (as its next poll would) and answer once the model serves here.

        Every model of the store is served by every worker without being asked; this makes a just-saved model
        serve at once and says whether it can (404 unknown, 409 or 503 when it cannot be loaded)."""
        model_store.check_name(name)
        await self._refresh()
        if self.predictor.current(name) is None:
            if not await anyio.to_thread.run_sync(self.store.versions, name):
                raise model_store.ModelNotFoundError(f"model {name!r} not found")
            failure = self.predictor.failures().get(name)
            raise NotReadyError(
                f"model {name!r} cannot be loaded: {failure.error if failure else 'no servable version'}"
            )

    async def unload(self, name: str) -> None:
        """Triton's unload, refused: this server serves every model of its store in every worker."""
        model_store.check_name(name)
        if not await anyio.to_thread.run_sync(self.store.versions, name):
            raise model_store.ModelNotFoundError(f"model {name!r} not found")
        raise ConflictError(
            f"model {name!r} cannot be unloaded: every model in the store is served; to stop serving a version, "
            "point its alias elsewhere (PUT /models/{name}/aliases/production) or delete it "
            "(DELETE /models/{name}/versions/{v})"
        )

    def _summary(self, name: str) -> ModelSummary:
        report = self.store.inspect(name)
        served = self.predictor.current(name)
        failure = self.predictor.failures().get(name)
        return ModelSummary(
            name=name,
            aliases=report.aliases,
            serving_version=served.version if served else None,
            runtime=served.runtime_name if served else None,
            runtime_note=served.runtime_note if served else None,
            load_error=None if failure is None else LoadError(version=failure.version, error=failure.error),
            damaged=[found.reason for found in report.damaged],
            versions=[
                VersionSummary(
                    version=manifest.version,
                    created_at=manifest.created_at,
                    params=manifest.params,
                    metrics=manifest.metrics,
                    sha256=manifest.sha256,
                    sequences=manifest.sequence is not None,
                    onnx=manifest.onnx is not None and manifest.onnx.file is not None,
                )
                for manifest in report.manifests
            ],
        )

    def manifest(self, name: str, version: int) -> VersionManifest:
        """One version's manifest."""
        return VersionManifest.model_validate(self.store.manifest(name, model_store.check_version(version)).to_dict())

    async def report_picture(self, name: str, version: int) -> bytes:
        """The version's report.png; VersionNotFoundError when it has none."""
        try:
            return await anyio.to_thread.run_sync(
                self.store.read_version_file, name, model_store.check_version(version), "report.png"
            )
        except FileNotFoundError as exc:
            raise model_store.VersionNotFoundError(f"{name} version {version} has no report picture") from exc

    # ---- changing ------------------------------------------------------------------------------------

    async def set_alias(self, name: str, alias: str, version: int) -> AliasSet:
        """Point an alias at a version once it has loaded and verified here; ConflictError (alias unchanged)
        when it does not. A damaged alias file is replaced (its valid entries kept)."""
        model_store.check_name(alias, "alias")
        try:  # the version every worker is about to serve must load: verified here, off the event loop
            await anyio.to_thread.run_sync(self.predictor.load_version, name, version)
        except (model_store.IntegrityError, model_store.DamagedVersionError) as exc:
            raise ConflictError(f"{exc}; alias {alias!r} is unchanged") from None
        replaced = await anyio.to_thread.run_sync(self.store.set_alias, name, alias, version)
        if replaced is not None:
            log.warning("replaced the damaged alias file of %s (%s) while setting %s", name, replaced.reason, alias)
        await self._refresh()  # this worker switches now; the others on their next poll
        served = self.predictor.current(name)
        return AliasSet(
            model=name,
            alias=alias,
            version=version,
            serving_version=served and served.version,
            repaired=None if replaced is None else replaced.reason,
        )

    async def import_version(
        self, settings: Settings, name: str, data: bytes, fmt: ImportFormat, promote: Promote, source: str
    ) -> ImportedVersion:
        """Check a model file and publish it as a new version (service/importer.py); this worker serves it at once
        if it was promoted (or is the newest without a production alias), the others on their next poll."""
        result = await run_import(settings, name, data, fmt, promote, source)
        await self._refresh()
        return ImportedVersion(
            model=result["model"],
            version=result["version"],
            promoted=result["promoted"],
            promotion_reason=result["promotion_reason"],
            manifest=VersionManifest.model_validate(result["manifest"]),
        )

    async def remove_alias(self, name: str, alias: str) -> None:
        """Remove an alias; VersionNotFoundError when the model has no such alias."""
        await anyio.to_thread.run_sync(self.store.remove_alias, name, alias)
        await self._refresh()

    async def delete_version(self, name: str, version: int) -> None:
        """Delete a version; VersionInUseError while an alias points at it."""
        await anyio.to_thread.run_sync(self.store.delete, name, model_store.check_version(version))
        await self._refresh()
