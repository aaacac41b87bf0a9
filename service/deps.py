"""FastAPI dependencies as Annotated aliases: the process's components, and the rule for mutating routes."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.components import Components
from service.config import Settings
from service.dataplane import DataPlane
from service.errors import ForbiddenError, UnauthorizedError
from service.job_events import JobEvents
from service.job_queue import JobQueue
from service.repository import Repository

# Each dependency reads app.state itself (no chain of sub-dependencies: one call per request each).
# async on purpose: FastAPI runs plain-def dependencies in a thread pool, one hop per request.


async def get_components(request: Request) -> Components:
    components: Components = request.app.state.components
    return components


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.components.settings
    return settings


async def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.components.dataplane
    return dataplane


async def get_repository(request: Request) -> Repository:
    repository: Repository = request.app.state.components.repository
    return repository


async def get_jobs(request: Request) -> JobQueue:
    jobs: JobQueue = request.app.state.components.jobs
    return jobs


async def get_job_events(request: Request) -> JobEvents:
    events: JobEvents = request.app.state.components.job_events
    return events


async def get_job_wake(request: Request) -> Callable[[], None]:
    wake: Callable[[], None] = request.app.state.components.wake_runner
    return wake


ComponentsDep = Annotated[Components, Depends(get_components)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
RepositoryDep = Annotated[Repository, Depends(get_repository)]
JobsDep = Annotated[JobQueue, Depends(get_jobs)]  # the training-job queue
JobEventsDep = Annotated[JobEvents, Depends(get_job_events)]  # this process's event-stream hub
JobWakeDep = Annotated[Callable[[], None], Depends(get_job_wake)]  # tell the runner a job was queued or cancelled

# auto_error=False: a missing or malformed header is answered by require_admin, with this service's messages
# (and not at all while no token is set); declared here so that OpenAPI shows the bearer scheme.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="LSTM_API_TOKEN; while it is unset, management routes are open to loopback clients only",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_admin(settings: Settings, client_host: str | None, bearer_token: str | None) -> None:
    """The rule for training and store changes, whatever the transport: the bearer token when one is configured
    (`bearer_token` is what the client sent after "Bearer ", None without one), else loopback clients only."""
    token = settings.api_token
    if token is None:
        if not _is_loopback(client_host):
            raise ForbiddenError(
                "management is open to loopback clients only while LSTM_API_TOKEN is unset; "
                "set a token and send 'Authorization: Bearer <token>'"
            )
        return
    if bearer_token is None:  # no Authorization header, another scheme, or no credentials after "Bearer"
        raise UnauthorizedError("missing credentials; expected 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(bearer_token.encode(), token.get_secret_value().encode()):
        raise ForbiddenError("invalid token")


async def require_admin(request: Request, settings: SettingsDep, credentials: BearerDep) -> None:
    """Training and store changes: a bearer token when one is configured, else loopback clients only."""
    host = request.client.host if request.client else None
    check_admin(settings, host, None if credentials is None else credentials.credentials)


# A route's `dependencies=[AdminDep]`: it answers nothing, it only refuses.
AdminDep = Depends(require_admin)
