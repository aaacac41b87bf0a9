"""Training jobs over HTTP: submit, inspect, list, cancel, and follow progress as server-sent events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio.to_thread
import numpy as np
import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask

import model_store
from service.deps import AdminDep, RuntimeDep
from service.errors import BusyError, InvalidInputError
from service.jobs import Job
from service.responses import json_response
from service.runtime import DEFAULT_MODEL, Runtime
from service.tensors import nested_to_array, parse_json_object
from training.config import BOUNDS, ParamError, TrainParams, preset
from training.memory import MemoryBudgetError, check_budget

router = APIRouter(prefix="/train", tags=["training"])
SSE_POLL_SECONDS = 0.25
SSE_KEEPALIVE_SECONDS = 15.0


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


def _submit(runtime: Runtime, request: TrainRequest) -> Job:
    """Validate, queue, and store the dataset beside the job (blocking: runs in a thread)."""
    try:
        config = preset(request.preset).with_overrides(request.params.given())
    except ParamError as exc:
        raise InvalidInputError(str(exc)) from None
    arrays = None
    described = None
    if request.dataset is not None:
        arrays = _dataset_arrays(request.dataset, runtime.settings.max_dataset_elements)
        described = {"shape": list(arrays[0].shape)}
    try:
        check_budget(config, runtime.settings.job_memory_budget_mb, None if arrays is None else arrays[0].shape)
    except MemoryBudgetError as exc:
        raise InvalidInputError(f"{exc} (LSTM_JOB_MEMORY_BUDGET_MB)") from None
    return runtime.jobs.create(
        model=request.model,
        preset=request.preset,
        promote=request.promote,
        params={name: getattr(config, name) for name in BOUNDS},
        max_epochs=config.max_epochs,
        queue_max=runtime.settings.job_queue_max,
        dataset=described,
        arrays=arrays,  # stored beside the job before it is queued
    )


@router.post(
    "",
    status_code=202,
    dependencies=[AdminDep],
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": TrainRequest.model_json_schema()}}}},
    responses={202: {"description": "the queued job; Location names it"}, 429: {"description": "queue full"}},
)
async def submit(request: Request, runtime: RuntimeDep) -> Response:
    """Queue a training job; poll Location, or follow /train/{id}/events."""
    body = await request.body()  # BodyLimitMiddleware bounds it
    parsed = _parse(body)
    job = await anyio.to_thread.run_sync(_submit, runtime, parsed)
    runtime.wake_runner()
    return json_response(job.public(), 202, headers={"Location": f"/train/{job.id}"})


@router.get("")
async def list_jobs(
    runtime: RuntimeDep,
    limit: int = Query(20, ge=1, le=200, description="jobs per page"),
    offset: int = Query(0, ge=0, le=2**31 - 1, description="jobs to skip"),
) -> dict[str, Any]:
    """Jobs, newest first, a page at a time."""
    jobs, total = await anyio.to_thread.run_sync(runtime.jobs.page, limit, offset)
    return {"jobs": [job.public() for job in jobs], "total": total, "limit": limit, "offset": offset}


@router.get("/{job_id}")
async def get_job(job_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """One job: status, progress, result or error."""
    job = await anyio.to_thread.run_sync(runtime.jobs.get, job_id)
    return job.public()


@router.delete("/{job_id}", dependencies=[AdminDep], responses={409: {"description": "the job has finished"}})
async def cancel_job(job_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Cancel a queued or running job; 409 once it has finished."""
    job = await anyio.to_thread.run_sync(runtime.jobs.request_cancel, job_id)
    runtime.wake_runner()
    # The worker that runs it stops it on its next tick; wait a little so the answer is final.
    deadline = asyncio.get_running_loop().time() + 5 * runtime.settings.job_poll_interval + 2
    while not job.finished and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        job = await anyio.to_thread.run_sync(runtime.jobs.get, job_id)
    return job.public()


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "job snapshots until it finishes"}},
)
async def job_events(job_id: str, request: Request, runtime: RuntimeDep) -> StreamingResponse:
    """Server-sent events: the job whenever it changes, then `end` when it finishes."""
    job = await anyio.to_thread.run_sync(runtime.jobs.get, job_id)
    if runtime.sse_clients >= runtime.settings.max_sse_clients:
        raise BusyError(f"too many event streams open ({runtime.sse_clients}); poll GET /train/{job_id} instead")
    # Counted now, with no await between check and count (counted when the stream started, a burst all passed
    # the check); given back once: when the stream ends, or after the response if the stream never started.
    runtime.sse_clients += 1
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            runtime.sse_clients -= 1

    async def stream() -> AsyncIterator[bytes]:
        try:
            current = job
            last: dict[str, Any] | None = None
            quiet_since = asyncio.get_running_loop().time()
            while True:
                shown = current.public()
                if shown != last:
                    yield _event(current.status if current.finished else "progress", shown)
                    last = shown
                    quiet_since = asyncio.get_running_loop().time()
                if current.finished:
                    yield _event("end", {"id": current.id, "status": current.status})
                    return
                if asyncio.get_running_loop().time() - quiet_since > SSE_KEEPALIVE_SECONDS:
                    yield b": keep-alive\n\n"
                    quiet_since = asyncio.get_running_loop().time()
                if await request.is_disconnected():
                    return
                await asyncio.sleep(SSE_POLL_SECONDS)
                current = await anyio.to_thread.run_sync(runtime.jobs.get, job_id)
        finally:
            release()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
        background=BackgroundTask(release),
    )
