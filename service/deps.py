"""FastAPI dependencies as Annotated aliases: the runtime, the parts of it routes use, the rule for mutating routes."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.errors import ForbiddenError, UnauthorizedError
from service.job_events import JobEvents
from service.job_queue import JobQueue
from service.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool, one hop per request.
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_jobs(runtime: RuntimeDep) -> JobQueue:
    return runtime.jobs


async def get_job_events(runtime: RuntimeDep) -> JobEvents:
    return runtime.job_events


async def get_job_wake(runtime: RuntimeDep) -> Callable[[], None]:
    return runtime.wake_runner


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobsDep = Annotated[JobQueue, Depends(get_jobs)]  # the training-job queue
JobEventsDep = Annotated[JobEvents, Depends(get_job_events)]  # this process's event-stream hub
JobWakeDep = Annotated[Callable[[], None], Depends(get_job_wake)]  # tell the runner a job was queued or cancelled


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def require_admin(request: Request, runtime: RuntimeDep) -> None:
    """Training and store changes: a bearer token when one is configured, else loopback clients only."""
    token = runtime.settings.api_token
    if token is None:
        host = request.client.host if request.client else None
        if not _is_loopback(host):
            raise ForbiddenError(
                "management is open to loopback clients only while LSTM_API_TOKEN is unset; "
                "set a token and send 'Authorization: Bearer <token>'"
            )
        return
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        raise UnauthorizedError("missing credentials; expected 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(credentials.encode(), token.get_secret_value().encode()):
        raise ForbiddenError("invalid token")


AdminDep = Depends(require_admin)
