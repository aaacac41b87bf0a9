"""One Content-Type rule for every JSON route (issue 11, item 9), and the OIP binary extension beside it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

import model_store
from service.oip import HEADER_LENGTH_HEADER
from tests.conftest import make_client, save_tiny
from tests.test_e2e import start_server, stop

X = np.sin(0.3 * np.arange(6, dtype=np.float32)).reshape(6, 1, 1)
OIP_INPUT = {"name": "input", "shape": [6, 1, 1], "datatype": "FP32", "data": X.ravel().tolist()}
# Each JSON route with a body it accepts, and what it answers when it has read that body as JSON.
# POST /train gets out-of-bounds params: a 422 that names them shows the JSON was read, and queues no job.
ROUTES = {
    "predict": ("POST", "/predict", {"inputs": X.tolist()}, 200, '"outputs"'),
    "oip-infer": ("POST", "/v2/models/lstm/infer", {"inputs": [OIP_INPUT]}, 200, '"outputs"'),
    "oip-version-infer": ("POST", "/v2/models/lstm/versions/1/infer", {"inputs": [OIP_INPUT]}, 200, '"outputs"'),
    "alias": ("PUT", "/models/lstm/aliases/production", {"version": 1}, 200, '"serving_version"'),
    "train": ("POST", "/train", {"params": {"hidden_size": 0}}, 422, "hidden_size"),
}
ACCEPTED = [
    None,
    "application/json",
    "Application/JSON; charset=utf-8",
    "application/vnd.api+json",
    "application/x-www-form-urlencoded",  # what `curl -d` and urllib send unless told otherwise
]
REFUSED = ["text/plain", "multipart/form-data; boundary=x", "application/xml", "application/octet-stream", "x"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = model_store.ModelStore(tmp_path_factory.mktemp("types") / "store")
    save_tiny(store, seed=1)
    with make_client(store) as client:
        yield client


def send(client: TestClient, route: str, content_type: str | None) -> tuple[int, str]:
    method, path, body, _, _ = ROUTES[route]
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.request(method, path, content=orjson.dumps(body), headers=headers)
    return response.status_code, response.text


@pytest.mark.parametrize("content_type", ACCEPTED, ids=lambda t: str(t))
@pytest.mark.parametrize("route", ROUTES)
def test_every_json_route_reads_json_under_the_accepted_content_types(
    client: TestClient, route: str, content_type: str | None
) -> None:
    status, text = send(client, route, content_type)
    _, _, _, expected_status, fragment = ROUTES[route]
    assert status == expected_status and fragment in text, text[:300]


@pytest.mark.parametrize("content_type", REFUSED)
@pytest.mark.parametrize("route", ROUTES)
def test_every_json_route_refuses_other_content_types_with_415_saying_what_is_expected(
    client: TestClient, route: str, content_type: str
) -> None:
    status, text = send(client, route, content_type)
    assert status == 415, text[:300]
    error = orjson.loads(text)["error"]
    assert repr(content_type) in error and "application/json" in error
    assert ("Inference-Header-Content-Length" in error) == route.startswith("oip")


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
@pytest.mark.parametrize("route", ROUTES)
def test_a_browser_page_must_label_its_json_so_that_cors_applies(
    client: TestClient, route: str, content_type: str | None
) -> None:
    # The types a page may send cross-site without a CORS preflight: with no token, POST /train from a page
    # open in a browser on the serving host would otherwise be accepted as a loopback client's.
    method, path, body, expected_status, fragment = ROUTES[route]
    headers = {"origin": "https://elsewhere.example"}
    if content_type is not None:
        headers["content-type"] = content_type
    refused = client.request(method, path, content=orjson.dumps(body), headers=headers)
    assert refused.status_code == 415, refused.text[:300]
    assert "application/json" in refused.json()["error"] and "CORS" in refused.json()["error"]
    labelled = client.request(method, path, json=body, headers={"origin": headers["origin"]})
    assert labelled.status_code == expected_status and fragment in labelled.text, labelled.text[:300]


def test_a_refused_content_type_is_quoted_shortened(client: TestClient) -> None:
    status, text = send(client, "predict", "text/" + "x" * 10_000)
    assert status == 415 and len(text) < 400


def binary_request() -> tuple[bytes, dict[str, str]]:
    raw = X.astype("<f4").tobytes()
    tensor = {"name": "input", "shape": [6, 1, 1], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
    header = orjson.dumps({"inputs": [tensor]})
    return header + raw, {HEADER_LENGTH_HEADER: str(len(header))}


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "application/json"])
def test_oip_binary_extension_is_read_whatever_the_content_type(client: TestClient, content_type: str | None) -> None:
    # Triton's own HTTP client sends binary tensors with Inference-Header-Content-Length and no Content-Type.
    body, headers = binary_request()
    if content_type is not None:
        headers["content-type"] = content_type
    response = client.post("/v2/models/lstm/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["outputs"][0]["shape"] == [6, 1, 1]


def test_the_binary_header_does_not_make_octet_stream_json_elsewhere(client: TestClient) -> None:
    body, headers = binary_request()
    response = client.post("/predict", content=body, headers=headers | {"content-type": "application/octet-stream"})
    assert response.status_code == 415, response.text[:300]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_dash_d_without_a_content_type_works_on_every_json_route(tmp_path: Path) -> None:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    server = start_server(store.root, tmp_path / "serve.log")
    try:
        for route, (method, path, body, expected_status, fragment) in ROUTES.items():
            command = ["curl", "-s", "-X", method, "-w", "\n%{http_code}", "-d", orjson.dumps(body).decode()]
            done = subprocess.run([*command, server.url + path], capture_output=True, text=True, timeout=60)
            text, status = done.stdout.rsplit("\n", 1)
            assert int(status) == expected_status and fragment in text, (route, status, text[:300])
    finally:
        stop(server)


def test_a_relabelled_request_is_counted_under_its_route(client: TestClient) -> None:
    line = 'lstm_http_requests_total{method="PUT",route="/models/{name}/aliases/{alias}",status="200"}'

    def count() -> float:
        found = [row for row in client.get("/metrics").text.splitlines() if row.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    before = count()
    for content_type in (None, "application/x-www-form-urlencoded"):
        assert send(client, "alias", content_type)[0] == 200
    assert count() == before + 2
