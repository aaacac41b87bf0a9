"""A corpus of hostile requests through the real app: each is a 4xx with a short {"error"}, the service stays healthy.

What tests/test_predict.py, test_oip.py, test_oip_routes.py and test_jobs.py already reject case by case is
not repeated here; this file adds what an attacker or a broken client sends: absurd shapes that would
allocate terabytes, truncated and oversized binary bodies, chunked bodies without Content-Length, JSON
nested 100 000 deep, multi-megabyte strings where a name belongs, invalid UTF-8, the wrong content type,
and oversized training datasets. After each, /healthz answers and a valid /predict still works; around
the absurd shapes the process's resident memory stays put.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

import model_store
from benchmarks import harness
from tests.conftest import make_client, save_tiny
from tests.test_oip_routes import HEADER

MIB = 1024 * 1024
BODY_LIMIT = 16 * MIB  # the default LSTM_MAX_BODY_BYTES
DATASET_LIMIT = 10_000  # elements; the default is 1 000 000, kept small here so the case stays fast
SHORT = 1024  # no error message needs more bytes, whatever the client sent


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = model_store.ModelStore(tmp_path_factory.mktemp("bad") / "store")
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    # No job is ever admitted: a training request that passes validation is a 429, so nothing trains.
    with make_client(store, job_queue_max=0, max_dataset_elements=DATASET_LIMIT) as test_client:
        yield test_client


def assert_healthy(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    answer = client.post("/predict", json={"inputs": [[[0.1]], [[0.2]]]})
    assert answer.status_code == 200 and answer.json()["version"] == 2, answer.text


def rss_mib() -> float:
    """This process's resident set size (the app runs in it under TestClient)."""
    return harness.rss_mib(os.getpid())


def binary(spec: dict[str, Any], raw: bytes, header_length: int | None = None) -> tuple[bytes, dict[str, str]]:
    """An OIP binary body: a JSON header with one input `spec` (json.dumps: ints beyond 64 bits allowed), then raw."""
    header = json.dumps({"inputs": [spec]}).encode()
    length = len(header) if header_length is None else header_length
    return header + raw, {HEADER: str(length), "content-type": "application/octet-stream"}


def fp32_input(shape: list[int], size: int | float | str, datatype: str = "FP32") -> dict[str, Any]:
    return {"name": "input", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}


def chunks(*parts: bytes) -> Iterator[bytes]:
    """A body sent chunked, without Content-Length."""
    yield from parts


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


X = np.sin(0.3 * np.arange(8, dtype=np.float32)).reshape(8, 1, 1)
OIP_JSON = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [8, 1, 1], "data": X.ravel().tolist()}]}
TEN_MB = "x" * (10 * MIB)
ABSURD = [10**12, 10**12, 1]  # 10^24 elements: 4 zettabytes of float32 if anything believed it

Case = tuple[str, str, bytes | Iterator[bytes], dict[str, str], int, str]


def case(
    case_id: str,
    method: str,
    path: str,
    body: bytes | tuple[bytes, dict[str, str]] | Iterator[bytes],
    status: int,
    fragment: str,
    headers: dict[str, str] | None = None,
) -> Any:
    extra = dict(headers or {})
    if isinstance(body, tuple):
        body, binary_headers = body
        extra |= binary_headers
    return pytest.param(method, path, body, extra, status, fragment, id=case_id)


JSON = {"content-type": "application/json"}
CASES = [
    # ---- POST /predict ------------------------------------------------------------------
    case("predict-100000-open-brackets", "POST", "/predict", b"[" * 100_000, 422, "depth limit exceeded", JSON),
    case(
        "predict-inputs-nested-100000-deep",
        "POST",
        "/predict",
        b'{"inputs": ' + nested(100_000) + b"}",
        422,
        "not valid JSON",
        JSON,
    ),
    case(
        "predict-10mb-model-name",
        "POST",
        "/predict",
        orjson.dumps({"inputs": [[[0.5]]], "model": TEN_MB}),
        422,
        "invalid model name 'xxx",
        JSON,
    ),
    case("predict-invalid-utf8", "POST", "/predict", b'{"inputs": [[[0.5]]], "model": "\xff\xfe"}', 422, "UTF-8", JSON),
    case("predict-nul-bytes", "POST", "/predict", b"\x00" * 64, 422, "not valid JSON", JSON),
    case(
        "predict-xml",
        "POST",
        "/predict",
        b"<inputs>0.5</inputs>",
        415,
        "is not accepted",
        {"content-type": "application/xml"},
    ),
    case(
        "predict-form-encoded",
        "POST",
        "/predict",
        b"inputs=0.5",
        422,
        "not valid JSON",
        {"content-type": "application/x-www-form-urlencoded"},
    ),
    case("predict-chunked-not-json", "POST", "/predict", chunks(b'{"inputs": [[', b"[0.5]]"), 422, "not valid JSON"),
    case(
        "predict-chunked-over-the-limit",
        "POST",
        "/predict",
        chunks(*[b" " * MIB] * 17),
        413,
        f"over the limit of {BODY_LIMIT} bytes",
    ),
    case(
        "predict-declared-over-the-limit",
        "POST",
        "/predict",
        b" " * (BODY_LIMIT + 1),
        413,
        f"{BODY_LIMIT + 1} bytes is over the limit",
        JSON,
    ),
    case(
        "predict-model-unknown-long",
        "POST",
        "/predict",
        orjson.dumps({"inputs": [[[0.5]]], "model": "a" * 64}),
        404,
        "not found",
        JSON,
    ),
    # ---- OIP, JSON ----------------------------------------------------------------------
    case("oip-100000-open-brackets", "POST", "/v2/models/lstm/infer", b"[" * 100_000, 422, "depth limit exceeded"),
    case(
        "oip-10mb-input-name",
        "POST",
        "/v2/models/lstm/infer",
        orjson.dumps({"inputs": [{**OIP_JSON["inputs"][0], "name": TEN_MB}]}),
        422,
        f"input 'name' has {10 * MIB} characters but at most 256",
    ),
    case(
        "oip-json-absurd-shape",
        "POST",
        "/v2/models/lstm/infer",
        orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": ABSURD, "data": [0.5]}]}),
        413,
        "= 1000000000000000000000000 elements but at most 1000000",
    ),
    case(
        "oip-json-dimension-beyond-64-bits",
        "POST",
        "/v2/models/lstm/infer",
        json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [10**30, 1, 1], "data": [0.5]}]}
        ).encode(),
        422,
        "integer dimensions",
    ),
    case(
        "oip-json-invalid-utf8",
        "POST",
        "/v2/models/lstm/infer",
        b'{"inputs": [{"name": "\xc3\x28"}]}',
        422,
        "UTF-8",
    ),
    # ---- OIP, binary tensor data --------------------------------------------------------
    case(
        "binary-absurd-shape-tiny-body",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input(ABSURD, 4), b"\0" * 4),
        413,
        "at most 1000000 are accepted",
    ),
    case(
        "binary-absurd-shape-and-size",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input(ABSURD, 4 * 10**24), b"\0" * 4),
        413,
        "at most 1000000 are accepted",
    ),
    case(
        "binary-size-beyond-64-bits-for-a-small-shape",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input([1, 1, 1], 4 * 10**24), b"\0" * 4),
        422,
        "but a non-negative byte count",
    ),
    case(
        "binary-size-2-to-the-62",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input([1, 1, 1], 2**62), b"\0" * 4),
        422,
        "needs 4 bytes",
    ),
    case(
        "binary-size-as-a-string",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input([1, 1, 1], "4"), b"\0" * 4),
        422,
        "but a non-negative byte count",
    ),
    case(
        "binary-header-length-beyond-the-body",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input([8, 1, 1], 32), X.tobytes(), header_length=10**6),
        422,
        "but the body has only",
    ),
    case(
        "binary-header-length-inside-the-json",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input([8, 1, 1], 32), X.tobytes(), header_length=20),
        422,
        "not valid JSON",
    ),
    case(
        "binary-header-length-of-20-digits",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input([8, 1, 1], 32), X.tobytes(), header_length=10**19),
        422,
        "but a byte count",
    ),
    case(
        "binary-truncated-tensor",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input([8, 1, 1], 32), X.tobytes()[:13]),
        422,
        "has 13 bytes after the",
    ),
    case(
        "binary-size-not-matching-the-shape",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input([8, 2, 1], 32), X.tobytes()),
        422,
        "needs 64 bytes",
    ),
    case(
        "binary-fp16",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input([8, 1, 1], 16, "FP16"), X.astype("<f2").tobytes()),
        422,
        "datatype is 'FP16' but FP32 or FP64",
    ),
    case(
        "binary-int64",
        "POST",
        "/v2/models/lstm/infer",
        binary(fp32_input([8, 1, 1], 64, "INT64"), np.zeros(8, "<i8").tobytes()),
        422,
        "datatype is 'INT64'",
    ),
    case(
        "binary-chunked-over-the-limit",
        "POST",
        "/v2/models/lstm/infer",
        chunks(*[b"\0" * MIB] * 17),
        413,
        "over the limit",
        {HEADER: "2"},
    ),
    # ---- names in the path --------------------------------------------------------------
    case("oip-60kb-model-name", "POST", "/v2/models/" + "a" * 60_000 + "/infer", b"{}", 422, "invalid model name"),
    case("models-60kb-model-name", "GET", "/models/" + "a" * 60_000 + "/versions/1", b"", 422, "invalid model name"),
    case("train-60kb-job-id", "GET", "/train/" + "a" * 60_000, b"", 404, "not found"),
    # ---- POST /train --------------------------------------------------------------------
    case("train-100000-open-brackets", "POST", "/train", b"[" * 100_000, 422, "depth limit exceeded", JSON),
    case(
        "train-plain-text", "POST", "/train", b"train me please", 415, "is not accepted", {"content-type": "text/plain"}
    ),
    case("train-invalid-utf8", "POST", "/train", b'{"preset": "\xff"}', 422, "UTF-8", JSON),
    case("train-json-list", "POST", "/train", b'[{"preset": "robust"}]', 422, "a JSON object was expected", JSON),
    case("train-params-a-list", "POST", "/train", b'{"params": [1, 2]}', 422, "params", JSON),
    case("train-dataset-a-list", "POST", "/train", b'{"dataset": [[[1.0]]]}', 422, "dataset", JSON),
    case(
        "train-seed-beyond-64-bits",
        "POST",
        "/train",
        json.dumps({"params": {"seed": 2**70}}).encode(),
        422,
        "expected seed from 0 to",
        JSON,
    ),
    case(
        "train-10mb-model-name",
        "POST",
        "/train",
        orjson.dumps({"model": TEN_MB}),
        422,
        "String should match pattern",
        JSON,
    ),
    case(
        "train-dataset-4d",
        "POST",
        "/train",
        orjson.dumps({"dataset": {"inputs": [[[[0.5]]]] * 2, "targets": [[[[0.5]]]] * 2}}),
        422,
        "4 dimensions",
        JSON,
    ),
    case(
        "train-dataset-deeply-ragged",
        "POST",
        "/train",
        orjson.dumps({"dataset": {"inputs": [[[0.5]], [[0.5], [[0.5]]]], "targets": [[[0.5]], [[0.5]]]}}),
        422,
        "ragged",
        JSON,
    ),
    case(
        "train-dataset-over-the-element-limit",
        "POST",
        "/train",
        orjson.dumps({"dataset": {"inputs": np.zeros((200, 100, 1)).tolist(), "targets": [[[0.0]]]}}),
        413,
        f"20000 elements (shape [200, 100, 1]) but at most {DATASET_LIMIT}",
        JSON,
    ),
    case(
        "train-dataset-over-the-body-limit",
        "POST",
        "/train",
        b'{"dataset": {"inputs": [' + b"[[0.0]]," * (BODY_LIMIT // 8) + b'[[0.0]]], "targets": []}}',
        413,
        "is over the limit",
        JSON,
    ),
    case(
        "train-dataset-chunked-over-the-body-limit",
        "POST",
        "/train",
        chunks(b'{"dataset": {"inputs": [', *[b"[[0.0]]," * (MIB // 8)] * 17),
        413,
        "over the limit",
    ),
    # ---- PUT /models/{name}/aliases/{alias}: a body FastAPI reads itself ------------------------
    case(
        "alias-declared-over-the-limit",
        "PUT",
        "/models/lstm/aliases/production",
        b" " * (BODY_LIMIT + 1),
        413,
        "over the limit",
        JSON,
    ),
    case(
        "alias-chunked-over-the-limit",
        "PUT",
        "/models/lstm/aliases/production",
        chunks(*[b" " * MIB] * 17),
        413,
        "over the limit",
        JSON,
    ),
    case("alias-100000-open-brackets", "PUT", "/models/lstm/aliases/production", b"[" * 100_000, 400, "parsing", JSON),
    case("alias-invalid-utf8", "PUT", "/models/lstm/aliases/production", b'{"version": "\xff"}', 400, "parsing", JSON),
    case(
        "alias-text-plain",
        "PUT",
        "/models/lstm/aliases/production",
        b'{"version": 1}',
        415,
        "is not accepted",
        {"content-type": "text/plain"},
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "fragment"), CASES)
def test_hostile_request_is_a_short_4xx_and_the_service_stays_healthy(
    client: TestClient,
    method: str,
    path: str,
    body: bytes | Iterator[bytes],
    headers: dict[str, str],
    status: int,
    fragment: str,
) -> None:
    response = client.request(method, path, content=body, headers=headers)
    assert response.status_code == status, response.text[:SHORT]
    assert fragment in response.json()["error"], response.text[:SHORT]
    assert len(response.content) < SHORT, f"{len(response.content)} bytes of error"
    assert_healthy(client)


def test_absurd_shapes_allocate_nothing(client: TestClient) -> None:
    """4 zettabytes declared, a few bytes sent, 50 times each way: the resident set does not grow."""
    json_body = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": ABSURD, "data": [0.5]}]})
    binary_body, binary_headers = binary(fp32_input(ABSURD, 4 * 10**24), b"\0" * 4)
    predict_body = b'{"inputs": [[[' + b"0.5, " * 1000 + b"0.5]]]}"  # (1, 1, 1001): a last dimension of 1001
    for _ in range(3):  # warm-up: first calls allocate caches that are not growth
        client.post("/v2/models/lstm/infer", content=json_body)
    before = rss_mib()
    for _ in range(50):
        assert client.post("/v2/models/lstm/infer", content=json_body).status_code == 413
        assert client.post("/v2/models/lstm/infer", content=binary_body, headers=binary_headers).status_code == 413
        assert client.post("/predict", content=predict_body).status_code == 422
    after = rss_mib()
    assert after - before < 50, f"resident set grew from {before:.0f} MiB to {after:.0f} MiB"
    assert_healthy(client)


@pytest.mark.parametrize("path", ["/predict", "/v2/models/lstm/infer"])
def test_chunked_body_without_content_length_is_served(client: TestClient, path: str) -> None:
    body = orjson.dumps({"inputs": X.tolist()} if path == "/predict" else OIP_JSON)
    response = client.post(path, content=chunks(body[:7], body[7:30], body[30:]))
    assert response.status_code == 200, response.text
    assert "content-length" not in response.request.headers


def test_chunked_binary_tensor_without_content_length_is_served(client: TestClient) -> None:
    body, headers = binary(fp32_input([8, 1, 1], 32), X.astype("<f4").tobytes())
    response = client.post("/v2/models/lstm/infer", content=chunks(body[:10], body[10:-5], body[-5:]), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["shape"] == [8, 1, 1]


@pytest.mark.parametrize("version", ["9" * 5000, "²"])
def test_oip_version_that_int_refuses_is_a_422(client: TestClient, version: str) -> None:
    response = client.post(f"/v2/models/lstm/versions/{version}/infer", json=OIP_JSON)
    assert response.status_code == 422, response.text[:SHORT]
