"""Prometheus metrics: request counts and latencies, batch sizes, served versions, load failures, damage.

With several workers, lstm-serve points PROMETHEUS_MULTIPROC_DIR at a shared folder before the
workers start; prometheus-client then keeps values in per-process files and /metrics sums them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUESTS = Counter("lstm_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"])
LATENCY = Histogram(
    "lstm_http_request_duration_seconds",
    "HTTP request latency by route and status",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
GRPC_REQUESTS = Counter("lstm_grpc_requests_total", "gRPC calls by method and status code", ["method", "code"])
GRPC_LATENCY = Histogram(
    "lstm_grpc_request_duration_seconds",
    "gRPC call latency by method and status code (each message of a stream on its own)",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_SIZE = Histogram(
    "lstm_inference_batch_size",
    "sequences (batch dimension) per forward pass",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
SERVED_VERSION = Gauge(
    "lstm_served_version", "version each worker serves, per model", ["model"], multiprocess_mode="liveall"
)
SERVED_RUNTIME = Gauge(
    "lstm_served_runtime",
    "1 for the runtime (torchscript or onnxruntime) that runs the version each worker serves, 0 for the other",
    ["model", "runtime"],
    multiprocess_mode="liveall",
)
LOAD_FAILURES = Counter("lstm_model_load_failures_total", "versions refused at load (hash or format)", ["model"])
JOBS = Gauge("lstm_training_jobs", "training jobs by state", ["state"], multiprocess_mode="mostrecent")
DAMAGED = Gauge(
    "lstm_model_damaged",
    "1 while the store reports the model damaged (its alias file, or its folder); 0 once repaired",
    ["model"],
    multiprocess_mode="mostrecent",
)
JOBS_DATABASE_UP = Gauge(
    "lstm_jobs_database_up", "1 while the training-job database can be read, else 0", multiprocess_mode="mostrecent"
)
SEQUENCES_LIVE = Gauge(
    "lstm_sequences_live",
    "live sequences (state kept between chunks), per model",
    ["model"],
    multiprocess_mode="livesum",
)
SEQUENCE_EXPIRED = Counter(
    "lstm_sequence_expired_total", "sequences freed after LSTM_SEQUENCE_IDLE_TIMEOUT idle seconds", ["model"]
)
SEQUENCE_STEPS = Counter("lstm_sequence_steps_total", "chunks of stateful sequences run", ["model"])
SEQUENCE_BATCH_SIZE = Histogram(
    "lstm_sequence_batch_size",
    "sequences (one chunk each) per sequence-step forward pass",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
FORWARDED_STEPS = Counter(
    "lstm_sequence_forwarded_steps_total",
    "sequence steps a worker forwarded to the worker that owns the sequence (--workers N > 1), by outcome: ok, error "
    "(the owner's 4xx/5xx), unreachable, lost (the connection broke mid-step), timeout",
    ["outcome"],
)
SWAPS = Counter("lstm_model_swaps_total", "times a worker switched the version it serves", ["model"])
STREAMS_OPEN = Gauge("lstm_streams_open", "open WebSocket streams (one sequence each)", multiprocess_mode="livesum")
STREAM_CLOSES = Counter(
    "lstm_stream_closes_total",
    "WebSocket streams ended, by close code (a refused handshake counts as 4000 + its HTTP status)",
    ["code"],
)


def render() -> tuple[bytes, str]:
    """The exposition text for this process, or summed over every worker in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template (not the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            labels = (scope["method"], template, str(status))
            REQUESTS.labels(*labels).inc()
            LATENCY.labels(*labels).observe(time.perf_counter() - started)
