"""lstm-client: the light Python client of lstm-service and its `lstm` command (httpx, numpy, websockets; no torch)."""

from lstm_client.client import FINISHED, Client, Job, Prediction
from lstm_client.errors import (
    ApiError,
    AuthError,
    BusyError,
    ClientError,
    JobFailedError,
    NotFoundError,
    ServerError,
    StreamClosedError,
)
from lstm_client.stream import Stream, StreamStep

__all__ = [
    "FINISHED",
    "ApiError",
    "AuthError",
    "BusyError",
    "Client",
    "ClientError",
    "Job",
    "JobFailedError",
    "NotFoundError",
    "Prediction",
    "ServerError",
    "Stream",
    "StreamClosedError",
    "StreamStep",
]
