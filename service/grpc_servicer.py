"""inference.GRPCInferenceService over the data plane: thin handlers, and what every call shares.

Each handler decodes with service/grpc_codec.py, calls the DataPlane or the Repository (as routes/oip.py
and routes/models.py do) and encodes. `rpc_handlers` registers them with what REST does in middleware:
a request id (the `x-request-id` metadata, sane or new, sent back in the trailing metadata), the metrics
per method and code, domain errors answered with the gRPC code of their HTTP status (service/errors.py's
one table) and a message saying what was expected, and a request that is not even a valid protobuf
message answered INVALID_ARGUMENT (gRPC's own deserialiser would call it INTERNAL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

import model_store
from service import grpc_codec, metrics
from service.components import Components
from service.deps import check_admin
from service.errors import InvalidInputError, ServiceError, grpc_code_for, status_for
from service.grpc_proto import inference_pb2 as pb
from service.grpc_proto import inference_pb2_grpc as pb_grpc
from service.oip import InferRequest
from service.request_id import sane_or_new
from service.sequence_params import SEQUENCE_ID, is_sequence_request, sequence_step_of

log = logging.getLogger("service.grpc")

SERVICE_NAME = "inference.GRPCInferenceService"
REQUEST_ID_KEY = "x-request-id"
Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Undecodable:
    """What the deserialiser gives for bytes that are not the method's request message."""

    message_type: str
    error: str

    def invalid(self) -> InvalidInputError:
        return InvalidInputError(f"the request is not a valid {self.message_type} protobuf message: {self.error}")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol's gRPC calls for one serving process's components."""

    def __init__(self, components: Components) -> None:
        self.settings = components.settings
        self.dataplane = components.dataplane
        self.repository = components.repository

    # ---- health and metadata -----------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        await self.dataplane.check_model_ready(request.name, grpc_codec.version_of(request.version))
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        return grpc_codec.server_metadata(self.dataplane.server_metadata())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        metadata = self.dataplane.model_metadata(request.name, grpc_codec.version_of(request.version))
        return grpc_codec.model_metadata(metadata)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        config = self.dataplane.model_config(request.name, grpc_codec.version_of(request.version))
        return grpc_codec.model_config(config)

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Context) -> pb.ModelStatisticsResponse:
        found = self.dataplane.model_statistics(request.name or None, grpc_codec.version_of(request.version))
        return grpc_codec.model_statistics(found)

    # ---- inference -------------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        version = grpc_codec.version_of(request.model_version)
        served = await self.dataplane.model_for(request.model_name, version)
        decoded = grpc_codec.decode_model_infer(
            request, input_size=served.input_size, max_elements=self.dataplane.max_elements
        )
        if decoded.parameters and is_sequence_request(decoded.parameters):
            return await self._sequence_step(request.model_name, version, decoded)
        output = await self.dataplane.infer(served, decoded.tensor)
        return grpc_codec.encode_model_infer(
            model_name=served.name, model_version=str(served.version), request_id=decoded.id, output=output
        )

    async def _sequence_step(
        self, name: str, version: int | str | None, decoded: InferRequest
    ) -> pb.ModelInferResponse:
        """A chunk of a stateful sequence, as REST's (Triton's sequence_id, sequence_start, sequence_end)."""
        step = sequence_step_of(
            name, version, decoded.parameters, decoded.tensor, max_id_length=self.settings.sequence_id_max_length
        )
        result = await self.dataplane.sequence_step(step)
        return grpc_codec.encode_model_infer(
            model_name=result.model,
            model_version=str(result.version),
            request_id=decoded.id,
            output=result.outputs,
            parameters={SEQUENCE_ID: result.sequence_id},
        )

    async def ModelStreamInfer(  # its requests may be Undecodable
        self, request_iterator: AsyncIterator[pb.ModelInferRequest | Undecodable], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's stream: one answer per request, in order; a failed request is answered in the stream with its
        error_message (as Triton does), and the stream goes on. A request with sequence parameters is a chunk of
        a stateful sequence, exactly as in ModelInfer (a stream may carry several sequences, or one)."""
        rid = _request_id(context)
        async for request in request_iterator:
            started, code = time.perf_counter(), "OK"
            try:
                if isinstance(request, Undecodable):
                    raise request.invalid()
                response = await self.ModelInfer(request, context)
            except Exception as exc:
                code, message = _failure(exc, "ModelStreamInfer", rid)
                yield pb.ModelStreamInferResponse(error_message=message)
            else:
                yield pb.ModelStreamInferResponse(infer_response=response)
            finally:
                _observe("ModelStreamInfer", code, started)

    # ---- the model repository extension (management: the same rule as REST's) --------------------------

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Context) -> pb.RepositoryIndexResponse:
        return grpc_codec.repository_index(await self.repository.index(request.ready))

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        self._check_admin(context)
        await self.repository.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        self._check_admin(context)
        await self.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _check_admin(self, context: Context) -> None:
        check_admin(self.settings, peer_host(context.peer()), _bearer_token(context))


def peer_host(peer: str) -> str | None:
    """The address in gRPC's peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000"); None for others (unix:)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return None


def _metadata(context: Context, key: str) -> str | bytes | None:
    for found, value in context.invocation_metadata() or ():
        if found == key:
            return value
    return None


def _bearer_token(context: Context) -> str | None:
    value = _metadata(context, "authorization")
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _request_id(context: Context) -> str:
    value = _metadata(context, REQUEST_ID_KEY)
    rid = sane_or_new(value.encode("latin-1", "replace") if isinstance(value, str) else b"")
    context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
    return rid


def _failure(exc: Exception, method: str, rid: str) -> tuple[str, str]:
    """The gRPC code name and message for an exception a call raised."""
    if isinstance(exc, ServiceError | model_store.StoreError):
        status = status_for(exc)
        if status >= 500:
            log.error("gRPC %s [request %s]: %s", method, rid, exc)
        return grpc_code_for(status), str(exc)
    log.exception("unhandled error in gRPC %s [request %s]", method, rid, exc_info=exc)
    return "INTERNAL", f"internal error; see the server log (request {rid})"


def _observe(method: str, code: str, started: float) -> None:
    metrics.GRPC_REQUESTS.labels(method, code).inc()
    metrics.GRPC_LATENCY.labels(method, code).observe(time.perf_counter() - started)


Unary = Callable[[Any, Context], Awaitable[Message]]


def _unary(method: str, call: Unary) -> Unary:
    async def handle(request: Message | Undecodable, context: Context) -> Message:
        started, code, rid = time.perf_counter(), "OK", _request_id(context)
        try:
            if isinstance(request, Undecodable):
                raise request.invalid()
            return await call(request, context)
        except asyncio.CancelledError:  # the client went away (or the deadline passed)
            code = "CANCELLED"
            raise
        except Exception as exc:
            code, message = _failure(exc, method, rid)
        finally:
            _observe(method, code, started)
        await context.abort(grpc.StatusCode[code], message, ((REQUEST_ID_KEY, rid),))
        raise AssertionError("abort returned")  # abort always raises

    return handle


def _deserializer(message_class: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Undecodable(name, str(exc))

    return parse


def rpc_handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler[Any, Any]:
    """Every method of inference.GRPCInferenceService (read from the proto) bound to `servicer`."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_class: type[Message] = getattr(pb, method.input_type.name)
        response_class: type[Message] = getattr(pb, method.output_type.name)
        call = getattr(servicer, method.name)
        options: dict[str, Any] = {
            "request_deserializer": _deserializer(request_class),
            "response_serializer": response_class.SerializeToString,
        }
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(call, **options)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(_unary(method.name, call), **options)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
