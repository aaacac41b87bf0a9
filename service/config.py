"""Settings of the service: pydantic-settings with the LSTM_ prefix; the only reader of os.environ."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from training.memory import DEFAULT_BUDGET_MB
from training.settings_cli import flags_of
from training.store_settings import StoreSettings

MIB = 1024 * 1024
# RLIMIT_DATA above the memory budget: a run estimated just under the budget needs its peak RSS (the
# estimate holds a 1.25 safety factor) plus about 250 MiB of data mappings never touched (docs/training.md).
JOB_MEMORY_HEADROOM_MB = 512


class Settings(StoreSettings):
    """Every knob of lstm-serve. Each field is an environment variable, LSTM_<FIELD NAME>, and (but the token) an
    lstm-serve flag generated from the field (service/__main__.py, training/settings_cli.py). The store's
    settings (where it is, the database, S3's limits) are StoreSettings', shared with lstm-train."""

    model_config = SettingsConfigDict(env_prefix="LSTM_", extra="ignore")

    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 to listen on every interface")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        1,
        description="server processes (each loads every serving model and has its own listening socket); "
        "auto: one per core of the CPU budget (affinity and cgroup quota)",
    )
    grpc: bool = Field(True, description="serve the Open Inference Protocol over gRPC too, on grpc_port (docs/grpc.md)")
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="gRPC port, on the same host; with several workers each listens on it (SO_REUSEPORT); "
        "0: any free one",
    )
    torch_threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per worker")
    runtime: Literal["auto", "onnxruntime", "torchscript"] = Field(
        "auto",
        description="what runs each version: auto (ONNX Runtime when the version has an ONNX file that matches its "
        "sha256, loads and answers like its TorchScript checkpoint, else TorchScript), onnxruntime (refuse versions "
        "without such a file) or torchscript (docs/runtimes.md)",
    )
    onnx_threads: int = Field(1, ge=1, le=256, description="ONNX Runtime intra-op threads per loaded version")
    onnx_max_elements: int = Field(
        512,
        ge=0,
        description="with LSTM_RUNTIME=auto, forwards of several sequences and more elements than this run in "
        "TorchScript, which is faster than ONNX Runtime there (docs/runtimes.md); onnxruntime runs every forward "
        "in ONNX Runtime",
    )
    api_token: SecretStr | None = Field(
        None, description="bearer token for mutating routes; when unset they are open to loopback clients only"
    )
    max_body_bytes: int = Field(16 * MIB, ge=1024, description="largest request body accepted (413 above)")
    import_max_bytes: int = Field(
        16 * MIB,
        ge=1024,
        le=1 << 30,
        description="largest model file POST /models/{name}/versions accepts (413 above; max_body_bytes applies too)",
    )
    import_time_limit: float = Field(
        300.0, gt=0, le=3600, description="seconds an import's checks and held-out metrics may take (then 503)"
    )
    max_discard_bytes: int = Field(
        64 * MIB,
        ge=0,
        description="largest body read to its end (and thrown away) before an early answer such as a 413, so that"
        " clients that send their whole body before reading (urllib, requests) get the answer instead of a"
        " connection reset; larger bodies are answered at once and the connection closed. A fixed size rather than"
        " a multiple of the body limit: reading costs time on the connection, not memory; 0: never read",
    )
    max_elements: int = Field(
        1_000_000, ge=1, description="largest number of tensor elements in one request (413 above)"
    )
    inline_max_elements: int = Field(
        4096,
        ge=0,
        description="a request up to this many elements runs on the event loop when no other is queued; "
        "larger ones, and batches, in the inference thread",
    )
    batching: bool = Field(True, description="dynamic batching of small concurrent requests (see docs/benchmarks.md)")
    batch_max_size: int = Field(256, ge=1, le=65_536, description="most sequences (batch columns) in one forward pass")
    batch_max_wait_ms: float = Field(
        0.0, ge=0, le=1000, description="how long a batch may wait for more requests; 0: batch only what is queued"
    )
    batch_max_elements: int = Field(
        16_384, ge=0, description="requests with more elements skip batching and run alone in the inference thread"
    )
    sequence_idle_timeout: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="seconds a live sequence (OIP sequence_id) may stay idle before its state is freed; its next "
        "chunk is then answered 409 saying it expired",
    )
    max_sequences: int = Field(
        10_000, ge=1, le=10_000_000, description="live sequences per worker; a new sequence_start answers 429 above"
    )
    sequence_memory: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="ended and expired sequence ids remembered per worker, so a late chunk hears why its "
        "sequence is gone (409 either way)",
    )
    sequence_id_max_length: int = Field(
        256, ge=1, le=4096, description="longest string sequence_id accepted, in characters (422 above)"
    )
    sequence_batching: bool = Field(
        True, description="run the steps of different live sequences that arrive together in one forward pass"
    )
    sequence_batch_max_size: int = Field(
        256, ge=1, le=65_536, description="most sequences (one batch column each) in one sequence-step forward pass"
    )
    poll_interval: float = Field(
        0.5, gt=0, le=60, description="seconds between checks of the store for alias changes and new models"
    )
    version_cache: int = Field(4, ge=0, le=64, description="non-serving versions kept loaded for explicit requests")
    onednn_cache_capacity: int = Field(
        256,
        ge=0,
        le=65_536,
        description="oneDNN primitive cache entries per worker: each distinct input shape keeps 0.25 MiB or more "
        "of kernels there, and a shape not cached rebuilds them, a few ms (0: nothing cached)",
    )
    drain_timeout: float = Field(30.0, ge=0, description="seconds SIGTERM waits for in-flight requests")
    limit_concurrency: int | None = Field(
        None,
        ge=2,
        description="uvicorn's limit_concurrency, per worker: a request is answered 503 when this many connections"
        " (its own included, idle keep-alive ones too) are open or this many requests are in flight; unset: no limit",
    )
    timeout_keep_alive: int = Field(
        5, ge=1, le=3600, description="seconds uvicorn keeps an idle connection open after a response (keep-alive)"
    )
    forwarded_allow_ips: str | None = Field(
        None,
        description="proxies whose X-Forwarded-For is trusted (comma-separated IPs); unset: never trust it",
    )
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; empty: CORS off")
    log_level: str = Field("info", description="log level of the service and uvicorn")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="log lines as text (`TIME LEVEL LOGGER [PID]: MESSAGE`) or one JSON object per line; "
        "either way with a UTC ISO 8601 time, access lines included",
    )
    job_concurrency: int = Field(1, ge=1, le=16, description="training jobs that run at once (over all workers)")
    job_queue_max: int = Field(16, ge=0, le=10_000, description="queued training jobs; POST /train answers 429 above")
    job_time_limit: float = Field(
        1800.0, gt=0, le=7 * 86_400, description="seconds a training job may run before it is stopped as failed"
    )
    job_torch_threads: int = Field(
        1, ge=1, le=256, description="torch threads of each training process (1: see docs/training.md, threads)"
    )
    job_memory_budget_mb: float = Field(
        DEFAULT_BUDGET_MB,
        ge=0,
        description="largest estimated peak memory of a training job, MiB; POST /train answers 422 above "
        "(0: no check; the estimate is in docs/training.md)",
    )
    job_memory_limit_mb: int | None = Field(
        None,
        ge=0,
        description="data-size limit (RLIMIT_DATA) of each training process, MiB; unset: the budget plus 512 "
        "(none when the budget is 0); 0: no limit",
    )
    job_nice: int = Field(10, ge=0, le=19, description="CPU niceness of training processes (serving stays first)")
    job_pt2: bool = Field(
        True,
        description="training jobs also export the torch.export .pt2 files (several seconds per job; false runs "
        "lstm-train --no-pt2)",
    )
    job_poll_interval: float = Field(
        0.5,
        gt=0,
        le=60,
        description="seconds between job-runner checks (a job queued by another process waits"
        " up to this long to be claimed)",
    )
    job_runner: bool = Field(
        True,
        description="run training jobs in this serving process; lstm-serve --workers N (N > 1) sets it false in"
        " its workers, and runs one job-runner process (lstm-worker) beside them instead",
    )
    job_heartbeat_timeout: float = Field(
        15.0,
        gt=0,
        description="a running job whose runner is silent this long is marked failed (with LSTM_DATABASE_URL: a "
        "runner cut off from PostgreSQL longer than this loses its jobs, and stops their training when it is back)",
    )
    job_work_dir: Path | None = Field(
        None,
        description="with LSTM_DATABASE_URL: the local folder where a runner keeps each running job's dataset and "
        "train.log (removed when the job ends); unset: lstm-jobs in the system's temporary folder",
    )
    job_log_tail_bytes: int = Field(
        64 * 1024,
        ge=0,
        le=16 * MIB,
        description="the last bytes of a job's train.log that GET /train/{id}/logs shows (with LSTM_DATABASE_URL, "
        "what each job's row keeps)",
    )
    max_dataset_elements: int = Field(
        1_000_000, ge=1, description="largest inline training dataset (inputs elements; 413 above)"
    )
    max_sse_clients: int = Field(64, ge=0, description="concurrent GET /train/{id}/events streams (429 above)")
    max_streams: int = Field(
        1024,
        ge=0,
        description="open WebSocket streams (WS /v2/models/{name}/stream) per worker; the handshake is refused with"
        " HTTP 429 above (0: no streams)",
    )
    sequence_forward_timeout: float = Field(
        30.0,
        gt=0,
        le=600,
        description="seconds a worker waits for the worker that owns a sequence to answer a step it forwarded "
        "(--workers N > 1); past it the step is a 503 and the sequence is discarded, as its client cannot know "
        "whether the step was applied",
    )
    sequence_connect_timeout: float = Field(
        2.0, gt=0, le=60, description="seconds a worker waits to connect to the worker that owns a sequence"
    )
    metrics_dir: Path | None = Field(
        None, description="prometheus multiprocess folder; lstm-serve sets one when --workers > 1"
    )

    @property
    def job_memory_limit(self) -> int:
        """The training processes' RLIMIT_DATA in MiB (0: none): the setting, or the budget plus headroom."""
        if self.job_memory_limit_mb is not None:
            return self.job_memory_limit_mb
        return int(self.job_memory_budget_mb) + JOB_MEMORY_HEADROOM_MB if self.job_memory_budget_mb else 0

    @field_validator("api_token")
    @classmethod
    def _token_not_empty(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty token would match nobody and silently lock management for everyone.
        if token is not None and not token.get_secret_value().strip():
            raise ValueError("LSTM_API_TOKEN is set but empty; unset it (loopback-only management) or set a secret")
        return token


# The command line of lstm-serve and lstm-worker: every setting is a flag (--store for store_dir, as
# lstm-train's), but the token: a command line is visible to every user of the machine in ps, so
# LSTM_API_TOKEN stays an environment variable only.
FLAGS = flags_of(Settings, {"store_dir": "store"}, skip=("api_token",))
