"""Domain errors of the service and the one table that maps them (and the store's) to HTTP statuses."""

from __future__ import annotations

import model_store


class ServiceError(Exception):
    """Base class of the service's own errors; the message is shown to the client as is."""


class InvalidInputError(ServiceError):
    """A request body or tensor that is malformed; the message says what was expected."""


class PayloadTooLargeError(ServiceError):
    """A body or tensor over a configured limit."""


class NotFoundError(ServiceError, LookupError):
    """A resource of the service's own (e.g. a training job) that does not exist."""


class NotReadyError(ServiceError):
    """No model is loaded yet (e.g. an empty store), or a model has no version that can be loaded."""


class UnauthorizedError(ServiceError):
    """A mutating request without credentials."""


class ForbiddenError(ServiceError):
    """A mutating request with the wrong token, or from a non-loopback client when no token is set."""


class ConflictError(ServiceError):
    """The request conflicts with the current state (e.g. cancelling a finished job)."""


class BusyError(ServiceError):
    """A queue is full; try again later."""


class SequenceStateError(ConflictError):
    """A sequence request that does not fit the state of its sequence (not live, expired, on another version)."""


class SequenceUnsupportedError(ConflictError):
    """A sequence request for a version exported before sequence support (it has no state-carrying method)."""


class SequenceLostError(NotReadyError):
    """The process that held a sequence's state is gone; the sequence must start again."""


# Checked in order: the first class the exception is an instance of decides the status. A version that
# exists but cannot be served (fails verification, or its files are damaged) conflicts with the request
# that names it: 409. A damaged model (its alias file or folder) and a failing file system are the
# server's condition, not the client's: 503, or 507 when the disk is full.
STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (InvalidInputError, 422),
    (PayloadTooLargeError, 413),
    (NotFoundError, 404),
    (NotReadyError, 503),
    (UnauthorizedError, 401),
    (ForbiddenError, 403),
    (ConflictError, 409),
    (BusyError, 429),
    (model_store.InvalidNameError, 422),
    (model_store.ModelNotFoundError, 404),
    (model_store.VersionNotFoundError, 404),
    (model_store.VersionInUseError, 409),
    (model_store.IntegrityError, 409),
    (model_store.DamagedVersionError, 409),
    (model_store.DamagedModelError, 503),
    (model_store.StorageFullError, 507),
    (model_store.StorageError, 503),
)


# The same statuses as gRPC codes (names of grpc.StatusCode, so this module needs no grpc): the gRPC transport
# answers every domain error with the code of its HTTP status. A tensor over the element limit (413) is
# RESOURCE_EXHAUSTED, the code gRPC itself gives a message over the size limit; 507 (disk full) too.
GRPC_CODE_BY_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
    507: "RESOURCE_EXHAUSTED",
}


def grpc_code_for(status: int) -> str:
    """The gRPC code name of an HTTP status from the table above; INTERNAL for anything else (a 500)."""
    return GRPC_CODE_BY_STATUS.get(status, "INTERNAL")


def status_for(error: Exception) -> int:
    """The HTTP status of a domain error; 500 for anything unexpected."""
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 500
