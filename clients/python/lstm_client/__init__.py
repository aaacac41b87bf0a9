"""lstm-client: the light Python client of lstm-service and its `lstm` command (httpx, numpy, websockets; no torch)."""

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from lstm_client.grpc_client import GrpcClient


def __getattr__(name: str) -> object:
    """GrpcClient on first use: it needs the `grpc` extra, which the HTTP client does not."""
    if name == "GrpcClient":
        from lstm_client.grpc_client import GrpcClient

        return GrpcClient
    raise AttributeError(f"module 'lstm_client' has no attribute {name!r}")


__all__ = [
    "FINISHED",
    "ApiError",
    "AuthError",
    "BusyError",
    "Client",
    "ClientError",
    "GrpcClient",
    "Job",
    "JobFailedError",
    "NotFoundError",
    "Prediction",
    "ServerError",
    "Stream",
    "StreamClosedError",
    "StreamStep",
]
