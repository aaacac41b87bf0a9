"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Response

from service import metrics
from service.deps import ComponentsDep, DataPlaneDep
from service.responses import json_response
from service.schemas import Liveness, NotReady, Readiness, error_responses

router = APIRouter(tags=["health"], responses=error_responses())


@router.get("/healthz")
async def healthz() -> Liveness:
    """200 while the process is up."""
    return Liveness()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": NotReady, "description": "no model loaded yet"}},
)
async def readyz(dataplane: DataPlaneDep) -> Response:
    """200 once a model is loaded, else 503 with how to get one."""
    serving = dataplane.serving()
    if not serving:
        return json_response(NotReady(error=dataplane.not_ready_message()).model_dump(), 503)
    return json_response(Readiness(serving=serving).model_dump())


@router.get(
    "/metrics",
    response_class=Response,  # not PlainTextResponse: that would declare the error answers text/plain too
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
async def prometheus_metrics(components: ComponentsDep) -> Response:
    """Prometheus text: requests and latencies per route and status, batch sizes, served versions, jobs."""
    await anyio.to_thread.run_sync(components.job_gauges.publish_jobs)
    text, content_type = metrics.render()
    return Response(text, media_type=content_type)
