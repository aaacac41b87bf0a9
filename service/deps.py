"""FastAPI dependencies as Annotated aliases: the runtime, and the rule for mutating routes."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, Request

from service.errors import ForbiddenError, UnauthorizedError
from service.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool, one hop per request.
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


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
