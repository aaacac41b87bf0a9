"""Pydantic models of the training-job JSON the /train routes answer (Job.public(), a page of jobs).

The routes still write their bodies with orjson from Job.public(); these models are what /openapi.json
says of them (a key that Job.public() leaves out, such as `result` before a job succeeds, is optional).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobProgress(BaseModel):
    """How far the training has come."""

    epoch: int = Field(description="epochs done")
    max_epochs: int = Field(description="epochs the job runs at most (early stopping may end it sooner)")
    loss: float | None = Field(description="training loss of the last epoch done; null before the first")


class JobDataset(BaseModel):
    """The user's own data the job trains on (the arrays are stored beside the job, not shown)."""

    shape: list[int] = Field(description="(seq, batch, 1) of the inputs and the targets")


class JobResult(BaseModel):
    """What a succeeded job registered."""

    model: str
    version: int = Field(description="the new version")
    metrics: dict[str, Any] = Field(description="its held-out metrics, as in its manifest")
    promoted: bool = Field(description="whether the production alias moved to it")
    promotion_reason: str = Field(description="why it was or was not promoted")


class TrainJob(BaseModel):
    """A training job: its request, its state, its progress, and its result or error."""

    id: str
    status: JobStatus
    created_at: str = Field(description="ISO 8601, UTC, milliseconds")
    started_at: str | None = Field(description="when a runner claimed it; null while queued")
    finished_at: str | None = Field(description="null until it has finished")
    model: str
    preset: Literal["robust", "tutorial"]
    promote: Literal["never", "if_better", "always"]
    params: dict[str, Any] = Field(description="every hyper-parameter the job trains with (preset and overrides)")
    progress: JobProgress
    dataset: JobDataset | None = Field(None, description="present when the request brought its own data")
    result: JobResult | None = Field(None, description="present once the job has succeeded")
    error: str | None = Field(None, description="present once the job has failed or was cancelled: why")


class TrainJobPage(BaseModel):
    """GET /train: a page of jobs, newest first."""

    jobs: list[TrainJob]
    total: int = Field(description="jobs in all")
    limit: int
    offset: int
