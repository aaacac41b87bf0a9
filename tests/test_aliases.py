"""Aliases everywhere a version is accepted, DELETE of an alias, and promotion only to a version that loads."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

import model_store
from tests.conftest import REMOTE, make_client, save_tiny


def oip(x: np.ndarray) -> dict[str, object]:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


X = np.full((3, 1, 1), 0.5, dtype=np.float32)


@pytest.fixture
def aliased(served_store: model_store.ModelStore) -> model_store.ModelStore:
    """lstm versions 1, 2 with production on 1 and canary on 2."""
    served_store.set_alias("lstm", "production", 1)
    served_store.set_alias("lstm", "canary", 2)
    return served_store


@pytest.fixture
def aliased_client(aliased: model_store.ModelStore) -> Iterator[TestClient]:
    with make_client(aliased) as client:
        yield client


def test_predict_accepts_an_alias_and_a_numeric_string_as_the_version(aliased_client: TestClient) -> None:
    client = aliased_client
    for version, expected in (("production", 1), ("canary", 2), ("2", 2), (1, 1), (None, 1)):
        body: dict[str, object] = {"inputs": [[[0.5]]]}
        if version is not None:
            body["version"] = version
        response = client.post("/predict", json=body)
        assert response.status_code == 200 and response.json()["version"] == expected, (version, response.text)
    by_alias = client.post("/predict", json={"inputs": [[[0.5]]], "version": "canary"}).json()["outputs"]
    by_number = client.post("/predict", json={"inputs": [[[0.5]]], "version": 2}).json()["outputs"]
    assert by_alias == by_number
    unknown = client.post("/predict", json={"inputs": [[[0.5]]], "version": "staging"})
    assert unknown.status_code == 404 and "no alias 'staging'" in unknown.json()["error"]
    assert "canary" in unknown.json()["error"]  # says which aliases exist


@pytest.mark.parametrize(
    ("version", "status"),
    [("Prod", 422), ("../x", 422), ("", 422), ("0", 422), ("9", 404), ([1], 422), (2.5, 422), (True, 422)],
)
def test_predict_refuses_bad_version_references(aliased_client: TestClient, version: object, status: int) -> None:
    response = aliased_client.post("/predict", json={"inputs": [[[0.5]]], "version": version})
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_oip_version_path_accepts_an_alias(aliased_client: TestClient) -> None:
    client = aliased_client
    infer = client.post("/v2/models/lstm/versions/canary/infer", json=oip(X))
    assert infer.status_code == 200 and infer.json()["model_version"] == "2", infer.text
    assert client.post("/v2/models/lstm/versions/production/infer", json=oip(X)).json()["model_version"] == "1"
    assert client.get("/v2/models/lstm/versions/canary/ready").json() == {"name": "lstm", "ready": True}
    assert client.get("/v2/models/lstm/versions/canary").status_code == 200
    assert client.get("/v2/models/lstm/versions/staging/ready").status_code == 404
    assert client.post("/v2/models/lstm/versions/staging/infer", json=oip(X)).status_code == 404


def test_a_promotion_moves_what_an_alias_in_a_request_names(aliased_client: TestClient) -> None:
    client = aliased_client
    assert client.put("/models/lstm/aliases/canary", json={"version": 1}).status_code == 200
    assert client.post("/predict", json={"inputs": [[[0.5]]], "version": "canary"}).json()["version"] == 1


def test_delete_alias_removes_it_and_the_model_serves_its_newest_version(
    aliased_client: TestClient, aliased: model_store.ModelStore
) -> None:
    client = aliased_client
    assert client.post("/predict", json={"inputs": [[[0.5]]]}).json()["version"] == 1
    assert client.delete("/models/lstm/versions/1").status_code == 409  # production holds it
    response = client.delete("/models/lstm/aliases/production")
    assert response.status_code == 204 and response.content == b""
    assert aliased.aliases("lstm") == {"canary": 2}
    assert client.post("/predict", json={"inputs": [[[0.5]]]}).json()["version"] == 2  # at once, on this worker
    assert client.delete("/models/lstm/versions/1").status_code == 204  # no alias holds it now
    gone = client.delete("/models/lstm/aliases/production")
    assert gone.status_code == 404 and "no alias 'production'" in gone.json()["error"]
    assert client.delete("/models/nope/aliases/production").status_code == 404
    assert client.delete("/models/lstm/aliases/BAD").status_code == 422
    assert not (aliased.root / "nope").exists()  # an unknown model leaves nothing behind


def test_delete_alias_needs_management_rights(aliased: model_store.ModelStore) -> None:
    with make_client(aliased, client=REMOTE) as client:
        assert client.delete("/models/lstm/aliases/canary").status_code == 403
    with make_client(aliased, api_token="s3cret-token") as client:
        assert client.delete("/models/lstm/aliases/canary").status_code == 401
        headers = {"authorization": "Bearer s3cret-token"}
        assert client.delete("/models/lstm/aliases/canary", headers=headers).status_code == 204
    assert aliased.aliases("lstm") == {"production": 1}


def test_promotion_to_a_version_that_fails_verification_is_409_and_the_alias_stays(
    aliased_client: TestClient, aliased: model_store.ModelStore
) -> None:
    client = aliased_client
    save_tiny(aliased, seed=3)  # version 3
    checkpoint = aliased.root / "lstm/versions/3/model.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    refused = client.put("/models/lstm/aliases/production", json={"version": 3})
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert "version 3 cannot be served" in error and "sha256" in error and "alias 'production' is unchanged" in error
    assert aliased.aliases("lstm") == {"canary": 2, "production": 1}
    assert client.post("/predict", json={"inputs": [[[0.5]]]}).json()["version"] == 1
    named = client.post("/predict", json={"inputs": [[[0.5]]], "version": 3})
    assert named.status_code == 409 and "cannot be served" in named.json()["error"]
    assert client.post("/v2/models/lstm/versions/3/infer", json=oip(X)).status_code == 409
    (aliased.root / "lstm/versions/2/manifest.json").write_bytes(b"{}")  # a version with a damaged manifest
    refused = client.put("/models/lstm/aliases/canary", json={"version": 2})
    assert refused.status_code == 409 and "manifest.json" in refused.json()["error"]
    assert aliased.aliases("lstm")["canary"] == 2  # left as it was (it already pointed there)
    assert client.put("/models/lstm/aliases/canary", json={"version": 1}).status_code == 200
