"""create_app(settings): the FastAPI application, its lifespan, and how errors become responses."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator

import torch
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

import model_store
from service.body import BodyLimitMiddleware
from service.components import Components
from service.config import Settings
from service.content_type import ContentTypeMiddleware
from service.errors import ServiceError, status_for
from service.grpc_server import GrpcServer
from service.job_runner import run_jobs
from service.metrics import MetricsMiddleware
from service.peers import Peers
from service.request_id import HEADER as REQUEST_ID_HEADER
from service.request_id import RequestIdMiddleware, request_id
from service.responses import error_response
from service.routes import health, models, oip, predict, stream, train, ui

log = logging.getLogger("service.app")


def _limit_onednn_cache(capacity: int) -> None:
    """Bound oneDNN's primitive cache; it must run before this process's first forward pass.

    oneDNN keeps the kernels it builds for each input shape in a process-wide LRU cache of 1024 entries,
    0.25 MiB or more each for the default model: a worker that saw 4000 distinct shapes grew by 473 MiB
    (docs/benchmarks.md, memory across input shapes). oneDNN reads the capacity from this variable
    once, when it builds its first primitive (importing torch builds none), so setting it here works
    in every worker and is too late only in a process that has already run a model.
    """
    os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(capacity)


def _set_torch_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # allowed once per process, before any parallel work
        torch.set_num_interop_threads(1)


def create_app(settings: Settings, *, peers: Peers | None = None) -> FastAPI:
    """The service for `settings`; nothing is opened until the lifespan starts. `peers`: this worker's place among
    the workers of an lstm-serve --workers N (N > 1), which forward sequence steps to each other."""
    _limit_onednn_cache(settings.onednn_cache_capacity)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _set_torch_threads(settings.torch_threads)
        components = await Components.open(settings, peers)
        await components.poller.refresh()
        if not components.dataplane.ready:
            log.warning(components.dataplane.not_ready_message())
        app.state.components = components
        # Everything loaded so far (torch, the models) lives for the whole process: move it out of
        # the collector's reach, or each nested JSON body (a list per number) triggers ~90 ms full
        # collections over ~200k long-lived objects.
        gc.collect()
        gc.freeze()
        try:
            # Beside uvicorn on this event loop; stopped (drained) before the components it calls are closed.
            grpc_server = await GrpcServer.start(components) if settings.grpc else None
            app.state.grpc_server = grpc_server
        except BaseException:
            await components.close()
            raise
        try:
            async with run_jobs(settings, components.jobs, on_success=components.poller.refresh) as components.job_work:
                poll = asyncio.create_task(components.poller.run_forever(), name="store-poll")
                reaper = asyncio.create_task(components.dataplane.sequences.reap_forever(), name="sequence-reaper")
                try:
                    yield
                finally:
                    for task in (poll, reaper):
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
        finally:
            if grpc_server is not None:
                await grpc_server.stop(settings.drain_timeout)
            await components.close()

    app = FastAPI(
        title="lstm-service",
        summary="Serves LSTMs that read sine sequences (seq, batch, 1) and predict the matching cosines.",
        lifespan=lifespan,
        docs_url=None,  # served by routes/ui.py from local assets: FastAPI's own pages load them from a CDN
        redoc_url=None,
    )
    app.include_router(predict.router)
    app.include_router(oip.router)
    app.include_router(stream.router)
    app.include_router(models.router)
    app.include_router(train.router)
    app.include_router(health.router)
    app.include_router(ui.router)
    app.add_exception_handler(ServiceError, _domain_error)
    app.add_exception_handler(model_store.StoreError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(ContentTypeMiddleware)  # inside the body limit, which reads the body of a 415 to its end
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, discard=settings.max_discard_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"])
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app


async def _domain_error(request: Request, exc: Exception) -> Response:
    status = status_for(exc)
    if status >= 500:
        log.error("%s %s [request %s]: %s", request.method, request.url.path, request_id(request), exc)
    return error_response(str(exc), status)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors())
    return error_response(f"invalid request: {problems}", 422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(str(exc.detail), exc.status_code, dict(exc.headers or {}))


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client closed the connection before its body was complete: nobody reads this answer."""
    log.info("%s %s [request %s]: client disconnected mid-body", request.method, request.url.path, request_id(request))
    return error_response("the request body ended before it was complete", 400)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Answered by Starlette outside every middleware, so the request id header is added here.
    rid = request_id(request)
    log.exception("unhandled error on %s %s [request %s]", request.method, request.url.path, rid)
    return error_response(f"internal error; see the server log (request {rid})", 500, {REQUEST_ID_HEADER: rid})


def app_from_env() -> FastAPI:
    """A uvicorn factory for running the app by name (`uvicorn --factory service.app:app_from_env`): settings from
        LSTM_* environment variables. lstm-serve builds its Settings from flags and variables and passes them itself.

    Run so with several worker processes, set LSTM_JOB_RUNNER=false and run one `lstm-worker` beside them: else
    each process runs a job runner of its own."""
    return create_app(Settings())
