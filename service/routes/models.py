"""The model store over HTTP: list, inspect, report picture, promote/roll back, remove an alias, delete."""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

import model_store
from service.deps import AdminDep, RuntimeDep
from service.errors import ConflictError
from service.runtime import Runtime

router = APIRouter(prefix="/models", tags=["models"])
log = logging.getLogger("service.models")


class AliasUpdate(BaseModel):
    """Body of PUT /models/{name}/aliases/{alias}."""

    version: int = Field(ge=1, le=model_store.MAX_VERSION, description="the version the alias points at")


def _summary(runtime: Runtime, name: str) -> dict[str, Any]:
    report = runtime.store.inspect(name)
    served = runtime.predictor.current(name)
    failure = runtime.predictor.failures().get(name)
    return {
        "name": name,
        "aliases": report.aliases,
        "serving_version": served.version if served else None,
        "load_error": None if failure is None else {"version": failure.version, "error": failure.error},
        "damaged": [found.reason for found in report.damaged],
        "versions": [
            {
                "version": manifest.version,
                "created_at": manifest.created_at,
                "params": manifest.params,
                "metrics": manifest.metrics,
                "sha256": manifest.sha256,
            }
            for manifest in report.manifests
        ],
    }


def _listing(runtime: Runtime) -> dict[str, Any]:
    scan = runtime.store.scan()
    models, damaged = [], list(scan.damaged)
    for name in scan.models:
        try:
            models.append(_summary(runtime, name))
        except model_store.DamagedModelError as exc:  # damaged since the scan (e.g. its folder replaced by a link)
            damaged.append(exc)
        except model_store.ModelNotFoundError:
            continue  # deleted since the scan
    return {"models": models, "damaged": [{"name": found.model, "error": found.reason} for found in damaged]}


@router.get("")
async def list_models(runtime: RuntimeDep) -> dict[str, Any]:
    """Every model with its versions (params, metrics, sha256), aliases, serving version and damaged parts;
    `damaged` lists the entries named like models that cannot be used, and why."""
    return await anyio.to_thread.run_sync(_listing, runtime)


@router.get("/{name}/versions/{version}")
async def get_version(name: str, version: int, runtime: RuntimeDep) -> dict[str, Any]:
    """One version's manifest."""
    return runtime.store.manifest(name, model_store.check_version(version)).to_dict()


@router.get(
    "/{name}/versions/{version}/report.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the version's report picture"}},
)
async def get_report(name: str, version: int, runtime: RuntimeDep) -> Response:
    """The version's report: the tutorial's figure, a held-out sine and the loss curve."""
    try:
        picture = await anyio.to_thread.run_sync(
            runtime.store.read_version_file, name, model_store.check_version(version), "report.png"
        )
    except FileNotFoundError as exc:
        raise model_store.VersionNotFoundError(f"{name} version {version} has no report picture") from exc
    return Response(picture, media_type="image/png")


@router.put(
    "/{name}/aliases/{alias}",
    dependencies=[AdminDep],
    responses={409: {"description": "the version cannot be served (fails verification); the alias is unchanged"}},
)
async def set_alias(name: str, alias: str, update: AliasUpdate, runtime: RuntimeDep) -> dict[str, Any]:
    """Point an alias at a version (promote or roll back) once it has loaded and verified here; every worker
    follows within the poll interval. A damaged alias file is replaced (its valid entries kept)."""
    model_store.check_name(alias, "alias")
    try:  # the version every worker is about to serve must load: verified here, off the event loop
        await anyio.to_thread.run_sync(runtime.predictor.load_version, name, update.version)
    except (model_store.IntegrityError, model_store.DamagedVersionError) as exc:
        raise ConflictError(f"{exc}; alias {alias!r} is unchanged") from None
    replaced = await anyio.to_thread.run_sync(runtime.store.set_alias, name, alias, update.version)
    if replaced is not None:
        log.warning("replaced the damaged alias file of %s (%s) while setting %s", name, replaced.reason, alias)
    await runtime.refresh()  # this worker switches now; the others on their next poll
    served = runtime.predictor.current(name)
    return {
        "model": name,
        "alias": alias,
        "version": update.version,
        "serving_version": served and served.version,
        "repaired": None if replaced is None else replaced.reason,
    }


@router.delete("/{name}/aliases/{alias}", status_code=204, dependencies=[AdminDep])
async def delete_alias(name: str, alias: str, runtime: RuntimeDep) -> Response:
    """Remove an alias; 404 when the model has no such alias. Without `production` the newest version serves."""
    await anyio.to_thread.run_sync(runtime.store.remove_alias, name, alias)
    await runtime.refresh()
    return Response(status_code=204)


@router.delete("/{name}/versions/{version}", status_code=204, dependencies=[AdminDep])
async def delete_version(name: str, version: int, runtime: RuntimeDep) -> Response:
    """Delete a version; 409 while an alias points at it."""
    await anyio.to_thread.run_sync(runtime.store.delete, name, model_store.check_version(version))
    await runtime.refresh()
    return Response(status_code=204)
