"""GrpcClient: Client's inference methods over the Open Inference Protocol's gRPC service (the `grpc` extra).

from lstm_client import GrpcClient
with GrpcClient("127.0.0.1:8001") as client:
    cosines = client.predict(sines)            # (seq, batch, 1) in, (seq, batch, 1) out, raw float32 bytes

Training and store changes stay on the HTTP Client: the gRPC service is inference, metadata and health.
Errors are the HTTP client's exceptions, with the HTTP status of the gRPC code (INVALID_ARGUMENT is a 422).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

import numpy as np

try:
    import grpc
    from google.protobuf.message import Message
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("GrpcClient needs the grpc extra: pip install 'lstm-client[grpc]'") from exc

from lstm_client._grpc import inference_pb2 as pb
from lstm_client.client import Prediction
from lstm_client.errors import ApiError, AuthError, ClientError, NotFoundError, ServerError

SERVICE = "/inference.GRPCInferenceService/"
Response = TypeVar("Response", bound=Message)

# The gRPC code of each answer as the HTTP status and exception the HTTP client gives for the same error.
_ERRORS: dict[grpc.StatusCode, tuple[int, type[ApiError]]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (422, ClientError),
    grpc.StatusCode.NOT_FOUND: (404, NotFoundError),
    grpc.StatusCode.UNAUTHENTICATED: (401, AuthError),
    grpc.StatusCode.PERMISSION_DENIED: (403, AuthError),
    grpc.StatusCode.FAILED_PRECONDITION: (409, ClientError),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (413, ClientError),  # or a full queue (429): the message says which
    grpc.StatusCode.UNAVAILABLE: (503, ServerError),
}


class GrpcClient:
    """Talks to one lstm-service's gRPC port (`target` is host:port, e.g. 127.0.0.1:8001)."""

    def __init__(self, target: str, timeout: float = 30.0, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self.timeout = timeout
        options = [("grpc.max_send_message_length", max_message_bytes), ("grpc.max_receive_message_length", -1)]
        self._channel = grpc.insecure_channel(target, options=options)

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Message, response: type[Response]) -> Response:
        call: Any = self._channel.unary_unary(
            SERVICE + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        try:
            answer: Response = call(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            error: Any = exc
            status, kind = _ERRORS.get(error.code(), (500, ServerError))
            raise kind(status, str(error.details())) from None
        return answer

    def live(self) -> bool:
        return self._call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live

    def ready(self) -> bool:
        """Whether the server has a model loaded."""
        return self._call("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready

    def model_metadata(self, model: str = "lstm", version: int | None = None) -> dict[str, Any]:
        """The model's versions and tensors, as GET /v2/models/{model} gives them."""
        request = pb.ModelMetadataRequest(name=model, version="" if version is None else str(version))
        answer = self._call("ModelMetadata", request, pb.ModelMetadataResponse)

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]

        return {
            "name": answer.name,
            "versions": list(answer.versions),
            "platform": answer.platform,
            "inputs": tensors(answer.inputs),
            "outputs": tensors(answer.outputs),
        }

    def predict(self, inputs: np.ndarray, model: str = "lstm", version: int | None = None) -> np.ndarray:
        """Cosines for sines shaped (seq, batch, 1)."""
        return self.prediction(inputs, model, version).outputs

    def prediction(self, inputs: np.ndarray, model: str = "lstm", version: int | None = None) -> Prediction:
        """Like predict(), with the model and version that answered."""
        x = np.ascontiguousarray(inputs, dtype="<f4")
        request = pb.ModelInferRequest(
            model_name=model, model_version="" if version is None else str(version), raw_input_contents=[x.tobytes()]
        )
        request.inputs.add(name="input", datatype="FP32", shape=x.shape)
        answer = self._call("ModelInfer", request, pb.ModelInferResponse)
        shape = list(answer.outputs[0].shape)
        outputs = np.frombuffer(answer.raw_output_contents[0], dtype="<f4").reshape(shape).astype(np.float32)
        return Prediction(outputs, answer.model_name, int(answer.model_version))
