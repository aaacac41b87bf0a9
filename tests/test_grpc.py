"""The Open Inference Protocol over gRPC: tritonclient.grpc against a real lstm-serve, and every bad input's code."""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.grpc import service_pb2_grpc as triton_pb_grpc

import model_store
from benchmarks import harness
from service.errors import GRPC_CODE_BY_STATUS
from service.grpc_proto import inference_pb2 as pb
from service.grpc_proto import inference_pb2_grpc as pb_grpc
from service.grpc_proto.pool import POOL
from tests.conftest import LOOPBACK, make_client, save_tiny, wait_for
from tests.test_oip import BAD_REQUESTS

pytestmark = pytest.mark.slow

MAX_ELEMENTS = 10_000  # as tests/test_oip.py's decoder, so the limit cases match
MAX_BODY_BYTES = 1024 * 1024
SHAPE = [2, 3, 1]
ONES = np.ones(SHAPE, dtype="<f4").tobytes()
X = np.sin(0.3 * np.arange(16, dtype=np.float32)).reshape(8, 2, 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[harness.ServeProcess, str]]:
    """A real lstm-serve over two tiny versions; the gRPC target (host:port) beside it."""
    tmp = tmp_path_factory.mktemp("grpc")
    store = model_store.ModelStore(tmp / "store")
    save_tiny(store, seed=1)
    save_tiny(store, seed=2, stateful=True)  # the serving version can run stateful sequences
    grpc_port = harness.free_port()
    flags = ["--grpc-port", str(grpc_port), "--max-elements", str(MAX_ELEMENTS)]
    flags += ["--max-body-bytes", str(MAX_BODY_BYTES), "--poll-interval", "0.2"]
    with harness.running(harness.start_lstm_serve(store.root, tmp / "serve.log", args=flags)) as process:
        yield process, f"{harness.HOST}:{grpc_port}"


@pytest.fixture(scope="module")
def target(server: tuple[harness.ServeProcess, str]) -> str:
    return server[1]


@pytest.fixture(scope="module")
def rest(server: tuple[harness.ServeProcess, str]) -> str:
    return server[0].url


@pytest.fixture
def triton(target: str) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(target: str) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def predict(rest: str, x: np.ndarray, version: int | None = None) -> np.ndarray:
    body: dict[str, Any] = {"inputs": x.tolist(), **({} if version is None else {"version": version})}
    answer = httpx.post(f"{rest}/predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return np.asarray(answer.json()["outputs"], dtype=np.float32)


def raw_input(x: np.ndarray, datatype: str = "FP32") -> triton_grpc.InferInput:
    tensor = triton_grpc.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


# ---- the generated code lives beside tritonclient's -----------------------------------------------------


def test_our_proto_and_tritonclients_coexist_in_one_process_and_speak_the_same_bytes() -> None:
    assert pb.ModelInferRequest.DESCRIPTOR.file.pool is POOL
    assert POOL is not descriptor_pool.Default()
    ours = pb.ModelInferRequest(model_name="lstm", model_version="2", id="r", raw_input_contents=[ONES])
    ours.inputs.add(name="input", datatype="FP32", shape=SHAPE).parameters["p"].int64_param = 7
    ours.parameters["sequence_id"].string_param = "s"
    theirs = triton_pb.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.model_version == "2" and theirs.raw_input_contents == [ONES]
    assert list(theirs.inputs[0].shape) == SHAPE and theirs.inputs[0].parameters["p"].int64_param == 7
    assert pb.ModelInferRequest.FromString(theirs.SerializeToString()) == ours


def test_every_field_number_is_tritons() -> None:
    """Each message and field of ours has the name, number and type Triton's has (ours are a subset)."""
    from tritonclient.grpc import model_config_pb2

    triton_messages = {
        **triton_pb.DESCRIPTOR.message_types_by_name,
        **model_config_pb2.DESCRIPTOR.message_types_by_name,
    }

    def compare(mine: Any, theirs: Any) -> None:
        for field in mine.fields:
            other = theirs.fields_by_name[field.name]
            assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), (
                mine.full_name,
                field.name,
            )
        for nested in mine.nested_types:
            compare(nested, theirs.nested_types_by_name[nested.name])

    for name, message in pb.DESCRIPTOR.message_types_by_name.items():
        compare(message, triton_messages[name])
    ours = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert (method.input_type.name, method.output_type.name) == (other.input_type.name, other.output_type.name)
        assert (method.client_streaming, method.server_streaming) == (other.client_streaming, other.server_streaming)


# ---- tritonclient.grpc end to end ------------------------------------------------------------------------


def test_health_and_metadata(triton: triton_grpc.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("lstm") and triton.is_model_ready("lstm", "1")
    server = triton.get_server_metadata()
    assert server.name == "lstm-service" and "binary_tensor_data" in server.extensions
    model = triton.get_model_metadata("lstm")
    assert model.name == "lstm" and list(model.versions) == ["1", "2"] and model.platform == "pytorch_torchscript"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("input", "FP32", [-1, -1, 1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [("output", "FP32", [-1, -1, 1])]


def test_infer_with_raw_contents_equals_predict(triton: triton_grpc.InferenceServerClient, rest: str) -> None:
    output = triton_grpc.InferRequestedOutput("output")
    result = triton.infer("lstm", [raw_input(X)], outputs=[output], request_id="req-7")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("lstm", "2", "req-7")
    np.testing.assert_allclose(result.as_numpy("output"), predict(rest, X), rtol=0, atol=1e-6)
    older = triton.infer("lstm", [raw_input(X)], model_version="1")
    np.testing.assert_allclose(older.as_numpy("output"), predict(rest, X, version=1), rtol=0, atol=1e-6)
    as_fp64 = triton.infer("lstm", [raw_input(X.astype(np.float64), "FP64")])
    np.testing.assert_allclose(as_fp64.as_numpy("output"), predict(rest, X), rtol=0, atol=1e-6)


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_infer_with_typed_contents_equals_predict(target: str, rest: str, datatype: str) -> None:
    """Triton's own generated messages and stub, with the values in contents.fp32_contents / fp64_contents."""
    request = triton_pb.ModelInferRequest(model_name="lstm")
    tensor = request.inputs.add(name="input", datatype=datatype, shape=list(X.shape))
    getattr(tensor.contents, f"{datatype.lower()}_contents").extend(X.ravel().tolist())
    with grpc.insecure_channel(target) as channel:
        response = triton_pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("output", "FP32", list(X.shape))
    values = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(X.shape)
    np.testing.assert_allclose(values, predict(rest, X), rtol=0, atol=1e-6)


def test_a_stream_answers_each_request_in_order_and_an_error_in_the_stream(
    triton: triton_grpc.InferenceServerClient, rest: str
) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    triton.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        triton.async_stream_infer("lstm", [raw_input(X)], request_id="a")
        triton.async_stream_infer("lstm", [raw_input(X.reshape(16, 1))], request_id="b")
        triton.async_stream_infer("lstm", [raw_input(X[:3])], request_id="c")
        got = [answers.get(timeout=60) for _ in range(3)]
    finally:
        triton.stop_stream()
    (first, none1), (none2, error), (third, none3) = got
    assert none1 is None and none2 is None and none3 is None
    np.testing.assert_allclose(first.as_numpy("output"), predict(rest, X), rtol=0, atol=1e-6)
    assert "3 dimensions (seq, batch, 1)" in error.message()
    np.testing.assert_allclose(third.as_numpy("output"), predict(rest, X[:3]), rtol=0, atol=1e-6)


def test_a_streamed_sequence_equals_one_shot(triton: triton_grpc.InferenceServerClient, rest: str) -> None:
    """Triton's sequence parameters on ModelStreamInfer: the chunks' outputs, concatenated, equal one /predict."""
    whole = X[:, :1]  # (8, 1, 1): one sequence
    chunks = [whole[:3], whole[3:5], whole[5:]]
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    triton.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for index, chunk in enumerate(chunks):
            triton.async_stream_infer(
                "lstm",
                [raw_input(chunk)],
                sequence_id=4242,
                sequence_start=index == 0,
                sequence_end=index == len(chunks) - 1,
            )
        got = [answers.get(timeout=60) for _ in chunks]
    finally:
        triton.stop_stream()
    assert [error for _, error in got] == [None] * len(chunks)
    outputs = np.concatenate([result.as_numpy("output") for result, _ in got])
    np.testing.assert_allclose(outputs, predict(rest, whole), rtol=0, atol=1e-5)
    assert {result.get_response().parameters["sequence_id"].int64_param for result, _ in got} == {4242}


def test_a_sequence_chunk_for_an_id_that_is_not_live_is_failed_precondition(
    triton: triton_grpc.InferenceServerClient,
) -> None:
    with pytest.raises(triton_grpc.InferenceServerException) as raised:
        triton.infer("lstm", [raw_input(X[:, :1])], sequence_id="never-started")
    assert raised.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert "sequence_start" in raised.value.message()
    started = triton.infer("lstm", [raw_input(X[:, :1])], sequence_id="unary-1", sequence_start=True)
    assert started.get_response().parameters["sequence_id"].string_param == "unary-1"


def test_request_ids_go_back_in_the_trailing_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    _, call = stub.ServerLive.with_call(pb.ServerLiveRequest(), metadata=(("x-request-id", "trace-me-1"),))
    assert ("x-request-id", "trace-me-1") in call.trailing_metadata()
    _, call = stub.ServerLive.with_call(pb.ServerLiveRequest(), metadata=(("x-request-id", "bad id with spaces"),))
    (made,) = [value for key, value in call.trailing_metadata() if key == "x-request-id"]
    assert len(made) == 32 and made != "bad id with spaces"
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), metadata=(("x-request-id", "trace-me-2"),))
    error: Any = raised.value
    assert ("x-request-id", "trace-me-2") in [tuple(item) for item in error.trailing_metadata()]


def test_the_health_service_and_reflection_answer(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
        ]
        listed, ours, health_file = list(reflection.ServerReflectionInfo(iter(requests), timeout=30))
    names = {service.name for service in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    (proto,) = ours.file_descriptor_response.file_descriptor_proto
    described = descriptor_pb2.FileDescriptorProto.FromString(proto)
    assert described.package == "inference" and [s.name for s in described.service] == ["GRPCInferenceService"]
    assert health_file.file_descriptor_response.file_descriptor_proto, "health's proto is described too"


def test_metrics_count_grpc_calls_by_method_and_code(stub: pb_grpc.GRPCInferenceServiceStub, rest: str) -> None:
    stub.ServerReady(pb.ServerReadyRequest())
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(pb.ModelInferRequest(model_name="lstm"))
    text = httpx.get(f"{rest}/metrics").text
    assert 'lstm_grpc_requests_total{code="OK",method="ServerReady"}' in text
    assert 'lstm_grpc_requests_total{code="INVALID_ARGUMENT",method="ModelInfer"}' in text
    assert 'lstm_grpc_request_duration_seconds_bucket{code="OK",le="0.0005",method="ServerReady"}' in text


def test_the_light_clients_grpc_client_predicts_as_the_http_one(target: str, rest: str) -> None:
    from lstm_client import Client, GrpcClient, NotFoundError

    with GrpcClient(target) as client, Client(rest) as http:
        assert client.live() and client.ready()
        assert client.model_metadata()["versions"] == ["1", "2"]
        answer = client.prediction(X, version=1)
        assert (answer.model, answer.version) == ("lstm", 1)
        np.testing.assert_allclose(answer.outputs, http.predict(X, version=1), rtol=0, atol=1e-6)
        np.testing.assert_allclose(client.predict(X), http.predict(X, binary=True), rtol=0, atol=1e-6)
        with pytest.raises(NotFoundError, match="model 'nope' not found") as raised:
            client.predict(X, model="nope")
        assert raised.value.status == 404


# ---- every bad input gets the matching status -------------------------------------------------------------


def request_of(*inputs: dict[str, Any], raw: list[bytes] | None = None, **fields: Any) -> pb.ModelInferRequest:
    """A ModelInferRequest for `lstm`; one default input (SHAPE of FP32, ONES as raw contents) when none is given."""
    message = pb.ModelInferRequest(**{"model_name": "lstm", **fields})
    for spec in inputs or [{}]:
        spec = {"name": "input", "datatype": "FP32", "shape": SHAPE, **spec}
        contents = spec.pop("contents", None)
        parameters = spec.pop("parameters", {})
        tensor = message.inputs.add(**spec)
        for key, value in parameters.items():
            set_parameter(tensor.parameters[key], value)
        if contents is not None:
            for field, values in contents.items():
                getattr(tensor.contents, field).extend(values)
    message.raw_input_contents.extend([ONES] if raw is None and not any("contents" in s for s in inputs) else raw or [])
    return message


def set_parameter(parameter: pb.InferParameter, value: object) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    else:
        parameter.string_param = str(value)


def with_outputs(message: pb.ModelInferRequest, *outputs: dict[str, Any]) -> pb.ModelInferRequest:
    for spec in outputs:
        output = message.outputs.add(name=spec["name"])
        for key, value in spec.get("parameters", {}).items():
            set_parameter(output.parameters[key], value)
    return message


def with_request_parameters(message: pb.ModelInferRequest, **parameters: object) -> pb.ModelInferRequest:
    for key, value in parameters.items():
        set_parameter(message.parameters[key], value)
    return message


SIX = [0.5, -0.25, 1.0, 0.0, 2.0, 3.5]
INVALID = "INVALID_ARGUMENT"


def case(case_id: str, message: pb.ModelInferRequest | bytes, code: str, fragment: str) -> Any:
    return pytest.param(message, code, fragment, id=case_id)


# Named as tests/test_oip.py's REST cases where gRPC can carry the same mistake (bytes for a body).
GRPC_BAD_REQUESTS = [
    case("not-json", b"\xff\xff\xff\xff", INVALID, "not a valid inference.ModelInferRequest protobuf message"),
    case("not-utf8", b"\x0a\x02\xc3\x28", INVALID, "not a valid inference.ModelInferRequest"),  # model_name
    case("nan-literal", request_of({"contents": {"fp32_contents": [*SIX[:5], float("nan")]}}), INVALID, "NaN"),
    case("1e999-is-infinite", request_of({"contents": {"fp32_contents": [float("inf")] * 6}}), INVALID, "infinite"),
    case("no-inputs", pb.ModelInferRequest(model_name="lstm"), INVALID, "'inputs' is an empty list but a non-empty"),
    case("empty-inputs", pb.ModelInferRequest(model_name="lstm", inputs=[]), INVALID, "an empty list"),
    case("two-inputs", request_of({}, {}, raw=[ONES, ONES]), INVALID, "2 inputs but the model takes exactly 1"),
    case("no-name", request_of({"name": ""}), INVALID, "'name' is missing or null but a string"),
    case("datatype-int32", request_of({"datatype": "INT32"}), INVALID, "datatype is 'INT32' but FP32 or FP64"),
    case("datatype-bytes", request_of({"datatype": "BYTES"}), INVALID, "datatype is 'BYTES' but FP32 or FP64"),
    case("datatype-missing", request_of({"datatype": ""}), INVALID, "datatype is missing or null but FP32 or FP64"),
    case("shape-2d", request_of({"shape": [6, 1]}), INVALID, "[6, 1] but 3 dimensions (seq, batch, 1)"),
    case("shape-4d", request_of({"shape": [1, 2, 3, 1]}), INVALID, "but 3 dimensions"),
    case("shape-zero", request_of({"shape": [0, 3, 1]}, raw=[b""]), INVALID, "every dimension must be positive"),
    case("shape-negative", request_of({"shape": [-2, -3, 1]}), INVALID, "must be positive"),
    case("last-dim-not-input-size", request_of({"shape": [1, 2, 3]}), INVALID, "input size 1"),
    case("no-data", request_of(raw=[]), INVALID, "neither 'contents' nor raw_input_contents"),
    case("flat-too-short", request_of({"contents": {"fp32_contents": SIX[:5]}}), INVALID, "has 5 elements but 6"),
    case("flat-too-long", request_of({"contents": {"fp32_contents": [*SIX, 1.0]}}), INVALID, "has 7 elements but 6"),
    case(
        "strings",
        request_of({"contents": {"bytes_contents": [b"1.5"] * 6}}),
        INVALID,
        "contents has bytes_contents; its values were expected in contents.fp32_contents",
    ),
    case(
        "string-among-numbers",
        request_of({"contents": {"fp32_contents": SIX[:5], "bytes_contents": [b"2"]}}),
        INVALID,
        "bytes_contents",
    ),
    case("booleans", request_of({"contents": {"bool_contents": [True] * 6}}), INVALID, "has bool_contents"),
    case(
        "boolean-among-floats",
        request_of({"contents": {"fp32_contents": SIX[:5], "bool_contents": [False]}}),
        INVALID,
        "bool_contents",
    ),
    case("boolean-among-ints", request_of({"contents": {"int_contents": [2, 3, 1, 4, 5, 6]}}), INVALID, "int_contents"),
    case(
        "beyond-float32",
        request_of({"datatype": "FP64", "contents": {"fp64_contents": [*SIX[:5], 1e39]}}),
        INVALID,
        "beyond float32 range at flat index 5",
    ),
    case("output-unknown", with_outputs(request_of(), {"name": "y"}), INVALID, "'y' does not exist"),
    case("name-too-long", request_of({"name": "x" * 300}), INVALID, "input 'name' has 300 characters but at most 256"),
    case("output-twice", with_outputs(request_of(), {"name": "output"}, {"name": "output"}), INVALID, "twice"),
    case(
        "output-binary-not-bool",
        with_outputs(request_of(), {"name": "output", "parameters": {"binary_data": "yes"}}),
        INVALID,
        "'binary_data' is a string ('yes') but a boolean",
    ),
    case(
        "binary-output-not-bool",
        with_request_parameters(request_of(), binary_data_output=1),
        INVALID,
        "'binary_data_output' is a number (1) but a boolean",
    ),
    case(
        "output-classification",
        with_outputs(request_of(), {"name": "output", "parameters": {"classification": 2}}),
        INVALID,
        "'classification', which this server does not support",
    ),
    case(
        "input-shared-memory",
        request_of({"parameters": {"shared_memory_region": "r"}}),
        INVALID,
        "'shared_memory_region', which this server does not support",
    ),
    case(
        "binary-size-less-than-remaining-bytes",
        request_of(raw=[ONES + b"\0\0\0\0"]),
        INVALID,
        "has 28 bytes of raw_input_contents but shape [2, 3, 1] of FP32 needs 24 bytes",
    ),
    case(
        "binary-size-not-shape-times-itemsize",
        request_of({"shape": [2, 2, 1]}),
        INVALID,
        "has 24 bytes of raw_input_contents but shape [2, 2, 1] of FP32 needs 16 bytes",
    ),
    case(
        "binary-fp64-size-of-fp32",
        request_of({"datatype": "FP64"}),
        INVALID,
        "shape [2, 3, 1] of FP64 needs 48 bytes",
    ),
    case("binary-truncated", request_of(raw=[ONES[:-3]]), INVALID, "has 21 bytes of raw_input_contents"),
    case(
        "binary-size-and-data",
        request_of({"contents": {"fp32_contents": SIX}}, raw=[ONES]),
        INVALID,
        "both 'contents' and raw_input_contents",
    ),
    case(
        "binary-bytes-for-a-json-input",
        request_of(raw=[ONES, ONES]),
        INVALID,
        "raw_input_contents has 2 entries but one per input",
    ),
    case(
        "binary-nan",
        request_of(raw=[np.full(SHAPE, np.nan, "<f4").tobytes()]),
        INVALID,
        "NaN, infinite or beyond float32 range at flat index 0",
    ),
    case(
        "binary-fp64-beyond-float32",
        request_of({"datatype": "FP64"}, raw=[np.full(SHAPE, 1e300, "<f8").tobytes()]),
        INVALID,
        "beyond float32 range at flat index 0",
    ),
    case(
        "one-element-over-the-limit",
        request_of({"shape": [MAX_ELEMENTS + 1, 1, 1]}),
        "RESOURCE_EXHAUSTED",
        f"= {MAX_ELEMENTS + 1} elements but at most {MAX_ELEMENTS} are accepted",
    ),
    # ---- what only gRPC can send, or what REST puts in the path ------------------------------------------
    case("absurd-shape", request_of({"shape": [10**12, 10**12, 1]}), "RESOURCE_EXHAUSTED", "at most 10000 are"),
    case(
        "typed-values-in-the-other-field",
        request_of({"datatype": "FP64", "contents": {"fp32_contents": SIX}}),
        INVALID,
        "its values were expected in contents.fp64_contents",
    ),
    case("message-over-the-size-limit", request_of(raw=[b"\0" * (MAX_BODY_BYTES + 1)]), "RESOURCE_EXHAUSTED", ""),
    case("model-unknown", request_of(model_name="nope"), "NOT_FOUND", "model 'nope' not found"),
    case("model-name-60kb", request_of(model_name="a" * 60_000), INVALID, "invalid model name"),
    case("version-unknown", request_of(model_version="99"), "NOT_FOUND", "99"),
    case("version-neither-number-nor-alias", request_of(model_version="-1!"), INVALID, "neither a positive integer"),
    case("alias-unknown", request_of(model_version="staging"), "NOT_FOUND", "staging"),
]

# REST mistakes that a protobuf message cannot make: JSON syntax and JSON types (a field's type is fixed by the
# proto), nesting (gRPC tensors are flat), and the binary extension's HTTP framing (gRPC frames each field).
JSON_ONLY = {
    "not-an-object",
    "id-not-a-string",
    "parameters-not-an-object",
    "inputs-not-a-list",
    "input-not-an-object",
    "shape-not-a-list",
    "shape-float",
    "shape-bool",
    "shape-of-strings",
    "data-not-a-list",
    "nested-wrong-count",
    "nested-ragged",
    "nested-number-for-list",
    "nested-too-deep",
    "flat-with-a-list",
    "nested-partly",
    "boolean-nested",
    "boolean-among-many-zeros",
    "null",
    "object",
    "object-for-row",
    "outputs-not-a-list",
    "output-name-a-number",
    "output-not-an-object",
    "output-parameters-not-an-object",
    "input-parameters-not-an-object",
    "name-a-number",
    "header-length-larger-than-body",
    "header-length-negative",
    "binary-without-header-length",
    "binary-size-without-header-length",
    "binary-size-negative",
}


def test_every_rest_bad_input_has_a_grpc_twin_or_cannot_be_sent_over_grpc() -> None:
    rest_ids = {param.id for param in BAD_REQUESTS}
    grpc_ids = {param.id for param in GRPC_BAD_REQUESTS}
    assert rest_ids - JSON_ONLY <= grpc_ids, sorted(rest_ids - JSON_ONLY - grpc_ids)
    assert JSON_ONLY <= rest_ids and not JSON_ONLY & grpc_ids


@pytest.mark.parametrize(("message", "code", "fragment"), GRPC_BAD_REQUESTS)
def test_bad_input_gets_the_matching_status_never_unknown_or_internal(
    target: str, message: pb.ModelInferRequest | bytes, code: str, fragment: str
) -> None:
    body = message if isinstance(message, bytes) else message.SerializeToString()
    with grpc.insecure_channel(target) as channel:
        call: Any = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # type: ignore[call-arg]
        with pytest.raises(grpc.RpcError) as raised:
            call(body, timeout=30)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode[code], error.details()
    assert fragment in error.details()
    assert len(error.details()) < 1024


def test_the_code_table_covers_every_client_error_status() -> None:
    assert GRPC_CODE_BY_STATUS[422] == GRPC_CODE_BY_STATUS[400] == "INVALID_ARGUMENT"
    assert {GRPC_CODE_BY_STATUS[s] for s in (404, 409, 413, 429, 503, 401, 403)} == {
        "NOT_FOUND",
        "FAILED_PRECONDITION",
        "RESOURCE_EXHAUSTED",
        "UNAVAILABLE",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
    }
    assert all(hasattr(grpc.StatusCode, code) for code in GRPC_CODE_BY_STATUS.values())


# ---- model configuration, statistics and the repository extension, over gRPC and REST ----------------------


def test_model_config_over_grpc_and_rest(triton: triton_grpc.InferenceServerClient, rest: str) -> None:
    config = triton.get_model_config("lstm").config
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        "lstm",
        "pytorch_torchscript",
        "pytorch",
        0,
    )
    assert [(t.name, list(t.dims)) for t in config.input] == [("input", [-1, -1, 1])]
    assert config.input[0].data_type == triton_grpc.model_config_pb2.TYPE_FP32
    over_http = triton_http.InferenceServerClient(rest.removeprefix("http://")).get_model_config("lstm", "1")
    assert over_http["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, -1, 1]}]
    assert over_http["version_policy"] == {"all": {}}
    with pytest.raises(triton_grpc.InferenceServerException, match="not found"):
        triton.get_model_config("nope")


def test_statistics_count_requests_per_version(triton: triton_grpc.InferenceServerClient, rest: str) -> None:
    def version_stats(answer: Any, version: str) -> Any:
        return next(s for s in answer.model_stats if s.version == version)

    before = version_stats(triton.get_inference_statistics("lstm", "1"), "1")
    for _ in range(3):
        triton.infer("lstm", [raw_input(X)], model_version="1")
    after = version_stats(triton.get_inference_statistics("lstm", "1"), "1")
    assert after.execution_count - before.execution_count == 3
    assert after.inference_count - before.inference_count == 3 * X.shape[1]
    stats = after.inference_stats
    assert stats.success.count - before.inference_stats.success.count == 3
    assert stats.success.ns >= stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert stats.queue.count == stats.success.count and after.last_inference > 0
    over_http = triton_http.InferenceServerClient(rest.removeprefix("http://")).get_inference_statistics("lstm", "1")
    (entry,) = over_http["model_stats"]
    assert entry["name"] == "lstm" and entry["version"] == "1" and entry["execution_count"] >= 3
    every = httpx.get(f"{rest}/v2/models/stats").json()["model_stats"]
    assert {"lstm"} == {s["name"] for s in every}
    with pytest.raises(triton_grpc.InferenceServerException, match="not found"):
        triton.get_inference_statistics("nope")


def test_repository_index_load_and_unload(triton: triton_grpc.InferenceServerClient, rest: str) -> None:
    index = {(m.name, m.version): m.state for m in triton.get_model_repository_index().models}
    assert index[("lstm", "2")] == "READY"  # the serving version
    triton.load_model("lstm")  # a loopback client, no token set: allowed, and it serves
    with pytest.raises(triton_grpc.InferenceServerException) as raised:
        triton.unload_model("lstm")
    assert raised.value.status() == "StatusCode.FAILED_PRECONDITION" and "cannot be unloaded" in raised.value.message()
    with pytest.raises(triton_grpc.InferenceServerException) as raised:
        triton.load_model("nope")
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    over_http = triton_http.InferenceServerClient(rest.removeprefix("http://"))
    assert {"name": "lstm", "version": "2", "state": "READY", "reason": ""} in over_http.get_model_repository_index()
    over_http.load_model("lstm")
    with pytest.raises(triton_http.InferenceServerException, match="cannot be unloaded"):
        over_http.unload_model("lstm")


def test_load_and_unload_need_the_token_over_grpc_as_over_rest(served_store: model_store.ModelStore) -> None:
    with make_client(served_store, LOOPBACK, grpc=True, api_token="s3cret") as client:
        target = f"127.0.0.1:{client.app.state.grpc_server.port}"  # type: ignore[attr-defined]
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            load = pb.RepositoryModelLoadRequest(model_name="lstm")
            for metadata, code in [
                ((), grpc.StatusCode.UNAUTHENTICATED),
                ((("authorization", "Bearer wrong"),), grpc.StatusCode.PERMISSION_DENIED),
            ]:
                with pytest.raises(grpc.RpcError) as raised:
                    stub.RepositoryModelLoad(load, metadata=metadata, timeout=30)
                assert raised.value.code() == code
            stub.RepositoryModelLoad(load, metadata=(("authorization", "Bearer s3cret"),), timeout=30)
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
        answer = client.post("/v2/repository/models/lstm/load", headers={"Authorization": "Bearer wrong"})
        assert answer.status_code == 403


# ---- processes: several workers share the port; SIGTERM drains ---------------------------------------------


def test_with_two_workers_each_gets_its_share_of_grpc_connections(tmp_path: Path) -> None:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    grpc_port = harness.free_port()
    flags = ["--grpc-port", str(grpc_port)]
    with harness.running(harness.start_lstm_serve(store.root, tmp_path / "serve.log", workers=2, args=flags)) as server:
        workers = server.workers()
        assert len(workers) == 2
        # Each worker says it is ready once its gRPC server too has started (the lifespan starts it first).
        assert wait_for(lambda: server.log_text().count("gRPC (Open Inference Protocol) on") == 2)
        channels = [
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(16)
        ]
        try:
            for channel in channels:
                assert pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=30).live

            def holders() -> set[int]:
                return {
                    pid
                    for pid in workers
                    for c in psutil.Process(pid).net_connections("tcp")
                    if c.laddr and c.laddr.port == grpc_port and c.status == psutil.CONN_ESTABLISHED
                }

            # 16 connections hashed over 2 sockets all land on one with probability 2 / 2**16.
            assert holders() == set(workers)
        finally:
            for channel in channels:
                channel.close()


def test_sigterm_lets_a_grpc_stream_in_flight_finish_then_exits_0(tmp_path: Path) -> None:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    grpc_port = harness.free_port()
    server = harness.start_lstm_serve(store.root, tmp_path / "serve.log", args=["--grpc-port", str(grpc_port)])
    sent: queue.Queue[pb.ModelInferRequest | None] = queue.Queue()

    def requests() -> Iterator[pb.ModelInferRequest]:
        while (request := sent.get()) is not None:
            yield request

    with harness.running(server), grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        answers: Any = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests(), timeout=120)
        sent.put(request_of())
        assert next(answers).infer_response.model_name == "lstm"  # the stream is open and in flight
        server.process.send_signal(signal.SIGTERM)
        sent.put(request_of())
        assert next(answers).infer_response.model_name == "lstm"  # still answered while the server drains
        sent.put(None)
        assert list(answers) == []
        assert server.process.wait(timeout=120) == 0


@pytest.mark.parametrize(("workers", "status"), [(1, 3), (2, 1)])
def test_a_taken_grpc_port_stops_lstm_serve_saying_so(tmp_path: Path, workers: int, status: int) -> None:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    with socket.socket() as taken:
        taken.bind((harness.HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = harness.lstm_serve_command(store.root, harness.free_port(), workers, ["--grpc-port", str(port)])
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == status, done.stderr[-2000:]
    assert f"cannot listen for gRPC on {harness.HOST}:{port}" in done.stdout + done.stderr
