"""lstm-client: the light Python client of lstm-service and its `lstm` command (httpx and numpy, no torch)."""

from lstm_client.client import FINISHED, Client, Job, Prediction
from lstm_client.errors import (
    ApiError,
    AuthError,
    BusyError,
    ClientError,
    JobFailedError,
    NotFoundError,
    ServerError,
)

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
]
