"""The model store over HTTP: list, inspect, import a model file, report picture, promote, remove an alias, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.deps import AdminDep, RepositoryDep, SettingsDep
from service.importer import FORMAT_BY_MEDIA, ImportFormat, Promote, format_of
from service.schemas import (
    AliasSet,
    AliasUpdate,
    ErrorBody,
    ImportedVersion,
    ModelListing,
    VersionManifest,
    error_responses,
)

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses())
ADMIN_ERRORS = (400, 401, 403, 404)  # a body that ended early, no or a wrong token, an unknown model or version


@router.get("")
async def list_models(repository: RepositoryDep) -> ModelListing:
    """Every model with its versions (params, metrics, sha256), aliases, serving version and damaged parts;
    `damaged` lists the entries named like models that cannot be used, and why."""
    return await repository.listing()


@router.get("/{name}/versions/{version}", responses=error_responses(404, 409))  # 409: a damaged version
async def get_version(name: str, version: int, repository: RepositoryDep) -> VersionManifest:
    """One version's manifest."""
    return repository.manifest(name, version)


_MODEL_FILE = {"schema": {"type": "string", "format": "binary"}}


@router.post(
    "/{name}/versions",
    status_code=201,
    dependencies=[AdminDep],
    responses=error_responses(*ADMIN_ERRORS, 413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": dict.fromkeys(("application/octet-stream", *FORMAT_BY_MEDIA), _MODEL_FILE),
        }
    },
)
async def import_version(
    name: str,
    request: Request,
    repository: RepositoryDep,
    settings: SettingsDep,
    format: ImportFormat | None = None,
    promote: Promote = "never",
    source: str = "",
) -> ImportedVersion:
    """Publish a model trained elsewhere: the body is a TorchScript archive (Content-Type application/zip or
    application/vnd.pytorch.torchscript) or an ONNX file (application/onnx); application/octet-stream, or
    `format=auto`, detects it (a zip is TorchScript). It is checked first (size, format, load, (seq, batch, 1) float32
    in and out at several shapes, finite outputs) and scored on the held-out suite; a failed check is a 422 naming
    it, and nothing is registered. `promote` is training's policy (default never). An ONNX file becomes a version
    without a TorchScript checkpoint, served by ONNX Runtime."""
    fmt = format_of(request.headers.get("content-type", ""), format)
    data = await request.body()
    return await repository.import_version(settings, name, data, fmt, promote, source or "POST /models")


@router.get(
    "/{name}/versions/{version}/report.png",
    response_class=Response,
    responses={
        **error_responses(404, 409),
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the version's report picture",
        },
    },
)
async def get_report(name: str, version: int, repository: RepositoryDep) -> Response:
    """The version's report: the tutorial's figure, a held-out sine and the loss curve."""
    return Response(await repository.report_picture(name, version), media_type="image/png")


@router.put(
    "/{name}/aliases/{alias}",
    dependencies=[AdminDep],
    responses={
        **error_responses(*ADMIN_ERRORS),
        409: {
            "model": ErrorBody,
            "description": "the version cannot be served (fails verification); the alias is unchanged",
        },
    },
)
async def set_alias(name: str, alias: str, update: AliasUpdate, repository: RepositoryDep) -> AliasSet:
    """Point an alias at a version (promote or roll back) once it has loaded and verified here; every worker
    follows within the poll interval. A damaged alias file is replaced (its valid entries kept)."""
    return await repository.set_alias(name, alias, update.version)


@router.delete(
    "/{name}/aliases/{alias}", status_code=204, dependencies=[AdminDep], responses=error_responses(*ADMIN_ERRORS)
)
async def delete_alias(name: str, alias: str, repository: RepositoryDep) -> Response:
    """Remove an alias; 404 when the model has no such alias. Without `production` the newest version serves."""
    await repository.remove_alias(name, alias)
    return Response(status_code=204)


@router.delete(
    "/{name}/versions/{version}",
    status_code=204,
    dependencies=[AdminDep],
    responses={**error_responses(*ADMIN_ERRORS), 409: {"model": ErrorBody, "description": "an alias points at it"}},
)
async def delete_version(name: str, version: int, repository: RepositoryDep) -> Response:
    """Delete a version; 409 while an alias points at it."""
    await repository.delete_version(name, version)
    return Response(status_code=204)
