"""POST /predict through the real app: answers, version selection, and every malformed body a 4xx."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import model_store
from tests.conftest import make_client, save_tiny


def sines(seq: int, batch: int) -> np.ndarray:
    t = 0.3 * np.arange(seq)[:, None] + np.linspace(0, 3, batch)[None, :]
    return np.sin(t)[..., None].astype(np.float32)  # (seq, batch, 1)


def expected(store: model_store.ModelStore, version: int, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        output: np.ndarray = store.load("lstm", version).module(torch.from_numpy(x)).numpy()
    return output


def test_predict_returns_the_serving_versions_outputs(client: TestClient, served_store: model_store.ModelStore) -> None:
    x = sines(20, 5)
    response = client.post("/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "lstm" and body["version"] == 2  # no alias: the newest
    assert np.allclose(np.array(body["outputs"]), expected(served_store, 2, x), atol=1e-6)


def test_predict_large_request_runs_off_the_loop_and_matches(
    client: TestClient, served_store: model_store.ModelStore
) -> None:
    x = sines(500, 16)  # over inline_max_elements: goes through the inference thread
    response = client.post("/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200
    assert np.allclose(np.array(response.json()["outputs"]), expected(served_store, 2, x), atol=1e-6)


def test_predict_named_version_and_alias(client: TestClient, served_store: model_store.ModelStore) -> None:
    x = sines(7, 2)
    response = client.post("/predict", json={"inputs": x.tolist(), "version": 1})
    assert response.json()["version"] == 1
    assert np.allclose(np.array(response.json()["outputs"]), expected(served_store, 1, x), atol=1e-6)
    served_store.set_alias("lstm", "production", 1)
    client.put("/models/lstm/aliases/production", json={"version": 1})
    assert client.post("/predict", json={"inputs": x.tolist()}).json()["version"] == 1


def test_predict_accepts_integers(client: TestClient) -> None:
    response = client.post("/predict", json={"inputs": [[[0]], [[1]], [[0]]]})
    assert response.status_code == 200
    assert np.array(response.json()["outputs"]).shape == (3, 1, 1)


BAD_BODIES = [
    (b"{", 422, "not valid JSON"),
    (b"", 422, "not valid JSON"),
    (b"[]", 422, "a JSON object was expected"),
    (b'"inputs"', 422, "a JSON object was expected"),
    (b"{}", 422, "missing 'inputs'"),
    (b'{"inputs": [[[1.0]]], "extra": 1}', 422, "unknown fields"),
    (b'{"inputs": 5}', 422, "3-D list"),
    (b'{"inputs": [1.0, 2.0]}', 422, "1 dimensions"),
    (b'{"inputs": [[1.0]]}', 422, "2 dimensions"),
    (b'{"inputs": [[[[1.0]]]]}', 422, "4 dimensions"),
    (b'{"inputs": [[[1.0], [2.0]], [[1.0]]]}', 422, "ragged"),
    (b'{"inputs": [[[1.0, 2.0]]]}', 422, "last dimension 2"),
    (b'{"inputs": [[[1.0]], [[[2.0]]]]}', 422, "ragged"),
    (b'{"inputs": [[[1.0], 2.0]]}', 422, "ragged"),
    (b'{"inputs": [[[1.0], [[2.0]]]]}', 422, "ragged"),
    (b'{"inputs": [[[0.5]], [[1]], [[0]], [[true]]]}', 422, "a boolean (true) at flat index 3"),
    (b'{"inputs": []}', 422, "empty"),
    (b'{"inputs": [[]]}', 422, "empty"),
    (b'{"inputs": [[[]]]}', 422, "empty"),
    (b'{"inputs": [[["0.5"]]]}', 422, "a string"),
    (b'{"inputs": [[[true]]]}', 422, "a boolean"),
    (b'{"inputs": [[[1.0]], [[false]]]}', 422, "a boolean (false) at flat index 1"),
    (b'{"inputs": [[[null]]]}', 422, "contains null"),
    (b'{"inputs": [[[{}]]]}', 422, "an object"),
    (b'{"inputs": [[[NaN]]]}', 422, "not valid JSON"),
    (b'{"inputs": [[[Infinity]]]}', 422, "not valid JSON"),
    (b'{"inputs": [[[1e999]]]}', 422, "not valid JSON"),
    (b'{"inputs": [[[1e300]]]}', 422, "beyond float32"),
    (b'{"inputs": [[[1.0]]], "model": 3}', 422, "a model name (string) was expected"),
    (b'{"inputs": [[[1.0]]], "model": "../etc"}', 422, "invalid model name"),
    (b'{"inputs": [[[1.0]]], "model": "nope"}', 404, "not found"),
    (b'{"inputs": [[[1.0]]], "version": 9}', 404, "no version 9"),
    (b'{"inputs": [[[1.0]]], "version": 0}', 422, "positive integer"),
    (b'{"inputs": [[[1.0]]], "version": true}', 422, "positive integer"),
    # Since issue 11 a string is an alias ("1" is version 1): an invalid alias name or a float is still a 422.
    (b'{"inputs": [[[1.0]]], "version": "Prod!"}', 422, "invalid alias"),
    (b'{"inputs": [[[1.0]]], "version": 1.5}', 422, "positive integer"),
    (b'{"inputs": [[[1.0]]], "version": "staging"}', 404, "no alias 'staging'"),
]


@pytest.mark.parametrize(("body", "status", "fragment"), BAD_BODIES)
def test_predict_rejects_malformed_body(client: TestClient, body: bytes, status: int, fragment: str) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert client.get("/healthz").status_code == 200


def test_predict_rejects_oversized_body_with_413(served_store: model_store.ModelStore) -> None:
    with make_client(served_store, max_body_bytes=2048) as client:
        response = client.post("/predict", json={"inputs": sines(200, 2).tolist()})
        assert response.status_code == 413
        assert "limit of 2048 bytes" in response.json()["error"]


def test_predict_rejects_chunked_oversized_body_with_413(served_store: model_store.ModelStore) -> None:
    with make_client(served_store, max_body_bytes=2048) as client:
        chunks = iter([b'{"inputs": [', b"[[0.5]]," * 400, b"[[0.5]]]}"])
        response = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
        assert response.status_code == 413


def test_predict_rejects_too_many_elements_with_413(served_store: model_store.ModelStore) -> None:
    with make_client(served_store, max_elements=100) as client:
        response = client.post("/predict", json={"inputs": sines(20, 6).tolist()})
        assert response.status_code == 413
        assert "at most 100 are accepted" in response.json()["error"]


def test_empty_store_answers_503_with_how_to_train(store: model_store.ModelStore) -> None:
    with make_client(store) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        response = client.post("/predict", json={"inputs": [[[0.5]]]})
        assert response.status_code == 503
        assert "lstm-train" in response.json()["error"]
        assert client.get("/v2/health/ready").status_code == 503


def test_model_trained_after_start_is_picked_up(store: model_store.ModelStore) -> None:
    with make_client(store) as client:
        assert client.get("/readyz").status_code == 503
        save_tiny(store)
        for _ in range(100):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.02)
        assert client.post("/predict", json={"inputs": [[[0.5]]]}).status_code == 200
