"""The model store over HTTP: list, inspect, report picture, promote/roll back, delete."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

import model_store
from service.deps import AdminDep, RuntimeDep
from service.runtime import Runtime

router = APIRouter(prefix="/models", tags=["models"])


class AliasUpdate(BaseModel):
    """Body of PUT /models/{name}/aliases/{alias}."""

    version: int = Field(ge=1, le=model_store.MAX_VERSION, description="the version the alias points at")


def _summary(runtime: Runtime, name: str) -> dict[str, Any]:
    store = runtime.store
    served = runtime.predictor.current(name)
    failure = runtime.predictor.failures().get(name)
    versions = []
    for version in store.versions(name):
        try:
            manifest = store.manifest(name, version)
        except model_store.StoreError:
            continue  # deleted between listing and reading
        versions.append(
            {
                "version": version,
                "created_at": manifest.created_at,
                "params": manifest.params,
                "metrics": manifest.metrics,
                "sha256": manifest.sha256,
            }
        )
    return {
        "name": name,
        "aliases": store.aliases(name),
        "serving_version": served.version if served else None,
        "load_error": None if failure is None else {"version": failure.version, "error": failure.error},
        "versions": versions,
    }


@router.get("")
async def list_models(runtime: RuntimeDep) -> dict[str, Any]:
    """Every model with its versions (params, metrics, sha256), aliases and serving version."""
    names = await anyio.to_thread.run_sync(runtime.store.models)
    return {"models": [await anyio.to_thread.run_sync(_summary, runtime, name) for name in names]}


@router.get("/{name}/versions/{version}")
async def get_version(name: str, version: int, runtime: RuntimeDep) -> dict[str, Any]:
    """One version's manifest."""
    return runtime.store.manifest(name, model_store.check_version(version)).to_dict()


@router.get(
    "/{name}/versions/{version}/report.png",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}, "description": "the version's report picture"}},
)
async def get_report(name: str, version: int, runtime: RuntimeDep) -> FileResponse:
    """The version's report: the tutorial's figure, a held-out sine and the loss curve."""
    try:
        path = runtime.store.version_file(name, model_store.check_version(version), "report.png")
    except FileNotFoundError as exc:
        raise model_store.VersionNotFoundError(f"{name} version {version} has no report picture") from exc
    return FileResponse(path, media_type="image/png")


@router.put("/{name}/aliases/{alias}", dependencies=[AdminDep])
async def set_alias(name: str, alias: str, update: AliasUpdate, runtime: RuntimeDep) -> dict[str, Any]:
    """Point an alias at a version (promote or roll back); every worker follows within the poll interval."""
    await anyio.to_thread.run_sync(runtime.store.set_alias, name, alias, update.version)
    await runtime.refresh()  # this worker switches now; the others on their next poll
    served = runtime.predictor.current(name)
    return {"model": name, "alias": alias, "version": update.version, "serving_version": served and served.version}


@router.delete("/{name}/versions/{version}", status_code=204, dependencies=[AdminDep])
async def delete_version(name: str, version: int, runtime: RuntimeDep) -> Response:
    """Delete a version; 409 while an alias points at it."""
    await anyio.to_thread.run_sync(runtime.store.delete, name, model_store.check_version(version))
    await runtime.refresh()
    return Response(status_code=204)
