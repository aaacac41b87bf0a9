"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from service import metrics
from service.deps import RuntimeDep
from service.responses import json_response

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "no model loaded yet"}})
async def readyz(runtime: RuntimeDep) -> Response:
    """200 once a model is loaded, else 503 with how to get one."""
    serving = {name: served.version for name, served in runtime.predictor.serving().items()}
    if not serving:
        return json_response({"status": "not ready", "error": runtime.not_ready_message()}, 503)
    return json_response({"status": "ready", "serving": serving})


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics(runtime: RuntimeDep) -> Response:
    """Prometheus text: requests and latencies per route and status, batch sizes, served versions, jobs."""
    await anyio.to_thread.run_sync(runtime.publish_jobs)
    runtime_text, content_type = metrics.render()
    return Response(runtime_text, media_type=content_type)
