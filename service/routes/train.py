"""Training jobs over HTTP: submit, inspect, list, cancel, and follow progress as server-sent events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
import anyio.to_thread
import numpy as np
import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

import model_store
from service.config import Settings
from service.deps import AdminDep, JobEventsDep, JobsDep, JobWakeDep, SettingsDep
from service.errors import BusyError, InvalidInputError
from service.job_queue import JobQueue
from service.job_schemas import TrainJob, TrainJobPage
from service.jobs import Job
from service.responses import json_response
from service.schemas import DEFAULT_MODEL, error_responses
from service.tensors import nested_to_array, parse_json_object
from training.config import BOUNDS, ParamError, TrainParams, preset
from training.memory import MemoryBudgetError, check_budget

router = APIRouter(prefix="/train", tags=["training"])
SSE_KEEPALIVE_SECONDS = 15.0
SSE_SHUTDOWN_GRACE_SECONDS = 5.0  # how long a stream has to end by itself at shutdown before it is cut
SSE_SEPARATOR = "\n"  # as the stream was always framed; clients accept \n, \r\n and \r alike


class TrainRequest(BaseModel):
    """Body of POST /train. `params` override the preset within the bounds listed in the README."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, pattern=model_store.NAME_PATTERN, description="model name")
    preset: Literal["robust", "tutorial"] = Field("robust", description="the starting hyper-parameters")
    params: TrainParams = Field(
        default_factory=TrainParams,
        description="hyper-parameter overrides: "
        + ", ".join(f"{name} ({bound.describe()})" for name, bound in BOUNDS.items()),
    )
    dataset: dict[str, Any] | None = Field(
        None,
        description="your own data: {'inputs': (seq, batch, 1), 'targets': (seq, batch, 1)}; "
        "the last fifth of the sequences is held out for the metrics",
    )
    promote: Literal["never", "if_better", "always"] = Field(
        "if_better", description="move the production alias to the new version: never, if_better, always"
    )


def _parse(body: bytes) -> TrainRequest:
    raw = parse_json_object(body) if body.strip() else {}
    try:
        return TrainRequest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidInputError(f"invalid training request: {problems}") from None


def _dataset_arrays(dataset: dict[str, Any], limit: int) -> tuple[np.ndarray, np.ndarray]:
    unknown = set(dataset) - {"inputs", "targets"}
    if unknown or "inputs" not in dataset or "targets" not in dataset:
        raise InvalidInputError(
            f"dataset has fields {sorted(dataset)}; expected exactly 'inputs' and 'targets', each (seq, batch, 1)"
        )
    inputs = nested_to_array(dataset["inputs"], label="dataset 'inputs'", features=1, max_elements=limit)
    targets = nested_to_array(dataset["targets"], label="dataset 'targets'", features=1, max_elements=limit)
    if inputs.shape != targets.shape:
        raise InvalidInputError(
            f"dataset 'inputs' {list(inputs.shape)} and 'targets' {list(targets.shape)} must have the same shape"
        )
    if inputs.shape[0] < 2:
        raise InvalidInputError(f"dataset has {inputs.shape[0]} time step; at least 2 were expected")
    return inputs, targets


def _submit(settings: Settings, jobs: JobQueue, request: TrainRequest) -> Job:
    """Validate, queue, and store the dataset beside the job (blocking: runs in a thread)."""
    try:
        config = preset(request.preset).with_overrides(request.params.given())
    except ParamError as exc:
        raise InvalidInputError(str(exc)) from None
    arrays = None
    described = None
    if request.dataset is not None:
        arrays = _dataset_arrays(request.dataset, settings.max_dataset_elements)
        described = {"shape": list(arrays[0].shape)}
    try:
        check_budget(config, settings.job_memory_budget_mb, None if arrays is None else arrays[0].shape)
    except MemoryBudgetError as exc:
        raise InvalidInputError(f"{exc} (LSTM_JOB_MEMORY_BUDGET_MB)") from None
    return jobs.create(
        model=request.model,
        preset=request.preset,
        promote=request.promote,
        params={name: getattr(config, name) for name in BOUNDS},
        max_epochs=config.max_epochs,
        queue_max=settings.job_queue_max,
        dataset=described,
        arrays=arrays,  # stored beside the job before it is queued
    )


@router.post(
    "",
    status_code=202,
    dependencies=[AdminDep],
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": TrainRequest.model_json_schema()}}}},
    responses={
        202: {"model": TrainJob, "description": "the queued job; Location names it"},
        **error_responses(400, 401, 403, 429),
    },
)
async def submit(request: Request, settings: SettingsDep, jobs: JobsDep, wake: JobWakeDep) -> Response:
    """Queue a training job; poll Location, or follow /train/{id}/events."""
    body = await request.body()  # BodyLimitMiddleware bounds it
    parsed = _parse(body)
    job = await anyio.to_thread.run_sync(_submit, settings, jobs, parsed)
    wake()
    return json_response(job.public(), 202, headers={"Location": f"/train/{job.id}"})


@router.get("", responses={200: {"model": TrainJobPage}, **error_responses()})
async def list_jobs(
    jobs: JobsDep,
    limit: int = Query(20, ge=1, le=200, description="jobs per page"),
    offset: int = Query(0, ge=0, le=2**31 - 1, description="jobs to skip"),
) -> Response:
    """Jobs, newest first, a page at a time."""
    found, total = await anyio.to_thread.run_sync(jobs.page, limit, offset)
    return json_response({"jobs": [job.public() for job in found], "total": total, "limit": limit, "offset": offset})


@router.get("/{job_id}", responses={200: {"model": TrainJob}, **error_responses(404)})
async def get_job(job_id: str, jobs: JobsDep) -> Response:
    """One job: status, progress, result or error."""
    job = await anyio.to_thread.run_sync(jobs.get, job_id)
    return json_response(job.public())


@router.delete(
    "/{job_id}",
    dependencies=[AdminDep],
    responses={200: {"model": TrainJob}, **error_responses(401, 403, 404, 409)},
)
async def cancel_job(job_id: str, settings: SettingsDep, jobs: JobsDep, wake: JobWakeDep) -> Response:
    """Cancel a queued or running job; 409 once it has finished."""
    job = await anyio.to_thread.run_sync(jobs.request_cancel, job_id)
    wake()
    # The runner stops it on its next tick (at most job_poll_interval away); wait a little so the answer is final.
    deadline = asyncio.get_running_loop().time() + 5 * settings.job_poll_interval + 2
    while not job.finished and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        job = await anyio.to_thread.run_sync(jobs.get, job_id)
    return json_response(job.public())


@router.get(
    "/{job_id}/logs",
    response_class=Response,  # the errors stay JSON (the error body); the 200 is text/plain, declared here
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "the end of train.log"},
        **error_responses(404),
    },
)
async def job_logs(job_id: str, settings: SettingsDep, jobs: JobsDep) -> PlainTextResponse:
    """The last LSTM_JOB_LOG_TAIL_BYTES of the job's train.log (lstm-train's stderr), from any replica."""
    text = await anyio.to_thread.run_sync(jobs.log_tail, job_id, settings.job_log_tail_bytes)
    return PlainTextResponse(text, headers={"Cache-Control": "no-cache"})


def _event(name: str, payload: dict[str, Any]) -> dict[str, str]:
    return {"event": name, "data": orjson.dumps(payload).decode()}


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "string",
                        "description": "events `progress` (the job, as GET /train/{job_id} shows it) whenever it "
                        "changes, then one named by its final status, then `end` with its id and status",
                    }
                }
            },
            "description": "job snapshots until it finishes",
        },
        **error_responses(404, 429),
    },
)
async def job_events(job_id: str, settings: SettingsDep, jobs: JobsDep, events: JobEventsDep) -> EventSourceResponse:
    """Server-sent events: the job whenever it changes, then `end` when it finishes."""
    job = await anyio.to_thread.run_sync(jobs.get, job_id)
    if events.streams >= settings.max_sse_clients:
        raise BusyError(f"too many event streams open ({events.streams}); poll GET /train/{job_id} instead")
    # Counted now, with no await between check and count (counted when the stream started, a burst all passed
    # the check); given back once: when the stream ends, or after the response if the stream never started.
    subscription = events.subscribe(job)

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            async for current in events.follow(subscription):
                yield _event(current.status if current.finished else "progress", current.public())
                if current.finished:
                    yield _event("end", {"id": current.id, "status": current.status})
        finally:
            events.release(subscription)

    shutdown = anyio.Event()

    async def end_on_shutdown() -> None:
        await shutdown.wait()
        events.end(subscription)

    # Pushed by the hub. At shutdown sse-starlette (it watches uvicorn's exit flag) sets `shutdown`: the stream
    # then ends cleanly, its last chunk sent, so an open stream never holds up the drain; the lifespan's hub
    # ends whatever is left (in-process clients).
    return EventSourceResponse(
        stream(),
        shutdown_event=shutdown,
        shutdown_grace_period=SSE_SHUTDOWN_GRACE_SECONDS,
        data_sender_callable=end_on_shutdown,
        headers={"Cache-Control": "no-cache"},
        sep=SSE_SEPARATOR,
        ping=SSE_KEEPALIVE_SECONDS,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep=SSE_SEPARATOR),
        background=BackgroundTask(events.release, subscription),
    )
