"""The Python client, re-exported from the light `lstm-client` distribution (clients/python) for old imports."""

from lstm_client import (
    FINISHED,
    ApiError,
    AuthError,
    BusyError,
    Client,
    ClientError,
    Job,
    JobFailedError,
    NotFoundError,
    Prediction,
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
