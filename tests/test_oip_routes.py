"""The Open Inference Protocol routes through the real app: metadata, readiness, JSON and binary inference."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from tests.test_predict import sines

HEADER = "Inference-Header-Content-Length"


def oip_json(x: np.ndarray, flat: bool = True, binary_output: bool = False) -> dict[str, object]:
    data = x.reshape(-1).tolist() if flat else x.tolist()
    request: dict[str, object] = {
        "id": "r1",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": data}],
    }
    if binary_output:
        request["outputs"] = [{"name": "output", "parameters": {"binary_data": True}}]
    return request


def oip_binary(x: np.ndarray, datatype: str = "FP32") -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f4" if datatype == "FP32" else "<f8").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": datatype,
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    )
    return header + raw, {HEADER: str(len(header)), "content-type": "application/octet-stream"}


def parse_binary(content: bytes, header_length: int) -> tuple[dict[str, object], np.ndarray]:
    header = orjson.loads(content[:header_length])
    (output,) = header["outputs"]
    return header, np.frombuffer(content[header_length:], dtype="<f4").reshape(output["shape"])


def predict_outputs(client: TestClient, x: np.ndarray, **extra: object) -> np.ndarray:
    response = client.post("/predict", json={"inputs": x.tolist(), **extra})
    assert response.status_code == 200
    return np.array(response.json()["outputs"], dtype=np.float32)


def test_server_metadata_lists_binary_extension(client: TestClient) -> None:
    body = client.get("/v2").json()
    assert body["name"] == "lstm-service"
    assert "binary_tensor_data" in body["extensions"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


def test_model_metadata_and_readiness(client: TestClient) -> None:
    meta = client.get("/v2/models/lstm").json()
    assert meta["name"] == "lstm" and meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, -1, 1]}]
    assert meta["outputs"][0]["name"] == "output"
    assert client.get("/v2/models/lstm/versions/1").json()["name"] == "lstm"
    assert client.get("/v2/models/lstm/ready").status_code == 200
    assert client.get("/v2/models/lstm/versions/1/ready").status_code == 200
    assert client.get("/v2/models/lstm/versions/9/ready").status_code == 404
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404


@pytest.mark.parametrize("flat", [True, False])
def test_oip_json_matches_predict(client: TestClient, flat: bool) -> None:
    x = sines(20, 5)
    response = client.post("/v2/models/lstm/infer", json=oip_json(x, flat=flat))
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "lstm" and body["model_version"] == "2" and body["id"] == "r1"
    (output,) = body["outputs"]
    assert output["name"] == "output" and output["datatype"] == "FP32" and output["shape"] == [20, 5, 1]
    got = np.array(output["data"], dtype=np.float32).reshape(20, 5, 1)
    assert np.allclose(got, predict_outputs(client, x), atol=1e-6)


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_oip_binary_matches_predict(client: TestClient, datatype: str) -> None:
    x = sines(300, 8)
    body, headers = oip_binary(x, datatype)
    response = client.post("/v2/models/lstm/versions/1/infer", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    header, got = parse_binary(response.content, int(response.headers[HEADER]))
    assert header["model_version"] == "1"
    assert np.allclose(got, predict_outputs(client, x, version=1), atol=1e-6)


def test_oip_json_request_with_binary_output(client: TestClient) -> None:
    x = sines(10, 3)
    response = client.post("/v2/models/lstm/infer", json=oip_json(x, binary_output=True))
    _, got = parse_binary(response.content, int(response.headers[HEADER]))
    assert np.allclose(got, predict_outputs(client, x), atol=1e-6)


_TRUNCATED_HEADER = (
    b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 1], "parameters": {"binary_data_size": 8}}]}'
)
BAD_OIP = [
    (b"{", {}, 422, "not valid JSON"),
    (b'{"inputs": []}', {}, 422, "non-empty list"),
    (b'{"inputs": [{"name": "input", "datatype": "INT32", "shape": [1, 1, 1], "data": [1]}]}', {}, 422, "FP32"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1], "data": [1]}]}', {}, 422, "3 dimensions"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 2], "data": [1, 2]}]}', {}, 422, "input size"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 1], "data": [1]}]}', {}, 422, "elements"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 1], "data": ["a"]}]}', {}, 422, "string"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 1], "data": [true]}]}', {}, 422, "boolean"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 1], "data": [null]}]}', {}, 422, "null"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [0, 1, 1], "data": []}]}', {}, 422, "positive"),
    (
        b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1000000000, 1000000000, 1], "data": []}]}',
        {},
        413,
        "at most",
    ),
    (b'{"inputs": []}', {HEADER: "999"}, 422, "body has only"),
    (b'{"inputs": []}', {HEADER: "-1"}, 422, "non-negative"),
    (b'{"inputs": []}', {HEADER: "abc"}, 422, "byte count"),
    (_TRUNCATED_HEADER + b"\x00\x00\x80\x3f", {HEADER: str(len(_TRUNCATED_HEADER))}, 422, "exactly that many bytes"),
    (_TRUNCATED_HEADER + b"\x00" * 12, {HEADER: str(len(_TRUNCATED_HEADER))}, 422, "exactly that many bytes"),
]


@pytest.mark.parametrize(("body", "headers", "status", "fragment"), BAD_OIP)
def test_oip_rejects_malformed_request(
    client: TestClient, body: bytes, headers: dict[str, str], status: int, fragment: str
) -> None:
    response = client.post("/v2/models/lstm/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_oip_unknown_model_and_bad_version(client: TestClient) -> None:
    x = sines(3, 1)
    assert client.post("/v2/models/nope/infer", json=oip_json(x)).status_code == 404
    assert client.post("/v2/models/lstm/versions/7/infer", json=oip_json(x)).status_code == 404
    # Since issue 11 a version path segment that is not a number is an alias: "x" is an unknown one.
    response = client.post("/v2/models/lstm/versions/x/infer", json=oip_json(x))
    assert response.status_code == 404 and "no alias 'x'" in response.json()["error"]
    response = client.post("/v2/models/lstm/versions/X!/infer", json=oip_json(x))
    assert response.status_code == 422 and "positive integer" in response.json()["error"]
