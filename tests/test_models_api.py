"""Model management, health, metrics and auth through the real app and lifespan."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import model_store
from service import Settings
from tests.conftest import LOOPBACK, REMOTE, make_client, save_tiny, wait_for


def test_models_lists_versions_aliases_and_serving(client: TestClient) -> None:
    body = client.get("/models").json()
    (entry,) = body["models"]
    assert entry["name"] == "lstm"
    assert [v["version"] for v in entry["versions"]] == [1, 2]
    assert entry["serving_version"] == 2
    assert entry["aliases"] == {}
    assert entry["load_error"] is None
    assert all(len(v["sha256"]) == 64 and "params" in v and "metrics" in v for v in entry["versions"])


def test_version_manifest_and_report(client: TestClient) -> None:
    manifest = client.get("/models/lstm/versions/1").json()
    assert manifest["version"] == 1 and manifest["format"] == "torchscript"
    report = client.get("/models/lstm/versions/1/report.png")
    assert report.status_code == 200 and report.headers["content-type"] == "image/png"
    assert report.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/models/lstm/versions/9", 404),
        ("/models/nope/versions/1", 404),
        ("/models/lstm/versions/0", 422),
        ("/models/lstm/versions/abc", 422),
        ("/models/lstm/versions/9/report.png", 404),
        ("/models/BAD/versions/1", 422),
    ],
)
def test_version_lookup_errors(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.json()["error"]


def test_promote_and_roll_back_switch_serving_at_once(client: TestClient) -> None:
    response = client.put("/models/lstm/aliases/production", json={"version": 1})
    assert response.status_code == 200
    assert response.json()["serving_version"] == 1
    assert client.post("/predict", json={"inputs": [[[0.1]]]}).json()["version"] == 1
    client.put("/models/lstm/aliases/production", json={"version": 2})
    assert client.post("/predict", json={"inputs": [[[0.1]]]}).json()["version"] == 2


@pytest.mark.parametrize(
    ("body", "status"), [({"version": 7}, 404), ({"version": 0}, 422), ({}, 422), ({"version": "x"}, 422)]
)
def test_promote_rejects_bad_versions(client: TestClient, body: dict[str, object], status: int) -> None:
    response = client.put("/models/lstm/aliases/production", json=body)
    assert response.status_code == status
    assert "error" in response.json()


def test_alias_changed_by_another_process_is_followed(client: TestClient, served_store: model_store.ModelStore) -> None:
    served_store.set_alias("lstm", "production", 1)  # as another process sharing the store would
    assert wait_for(lambda: client.post("/predict", json={"inputs": [[[0.1]]]}).json()["version"] == 1)


def test_delete_is_refused_while_aliased(client: TestClient, served_store: model_store.ModelStore) -> None:
    client.put("/models/lstm/aliases/production", json={"version": 1})
    response = client.delete("/models/lstm/versions/1")
    assert response.status_code == 409
    assert "production" in response.json()["error"]
    assert client.delete("/models/lstm/versions/2").status_code == 204
    assert served_store.versions("lstm") == [1]
    assert client.delete("/models/lstm/versions/2").status_code == 404


def test_tampered_version_is_never_served(client: TestClient, served_store: model_store.ModelStore) -> None:
    # With no production alias the newest version serves: pin 2 first, or the poller could load 3 before the
    # tampering below and the test would see a good version 3 served.
    served_store.set_alias("lstm", "production", 2)
    save_tiny(served_store, seed=3)
    path = served_store.root / "lstm/versions/3/model.pt"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    served_store.set_alias("lstm", "production", 3)
    assert wait_for(lambda: client.get("/models").json()["models"][0]["load_error"] is not None)
    entry = client.get("/models").json()["models"][0]
    assert entry["serving_version"] == 2
    assert entry["load_error"]["version"] == 3 and "sha256" in entry["load_error"]["error"]
    assert client.post("/predict", json={"inputs": [[[0.1]]]}).json()["version"] == 2
    assert 'lstm_model_load_failures_total{model="lstm"} 1.0' in client.get("/metrics").text
    response = client.post("/predict", json={"inputs": [[[0.1]]], "version": 3})
    # A version that fails verification is a 409 that says why (it was a 500 before issue 11).
    assert response.status_code == 409 and "sha256" in response.json()["error"]
    assert "cannot be served" in response.json()["error"]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "serving": {"lstm": 2}}


def test_metrics_count_requests_by_route_template_and_status(client: TestClient) -> None:
    client.post("/predict", json={"inputs": [[[0.1]], [[0.2]]]})
    client.post("/predict", content=b"{")
    client.get("/models/lstm/versions/1")
    text = client.get("/metrics").text
    assert 'lstm_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'lstm_http_requests_total{method="POST",route="/predict",status="422"}' in text
    assert 'route="/models/{name}/versions/{version}",status="200"' in text
    assert "lstm_http_request_duration_seconds_bucket" in text
    assert 'lstm_inference_batch_size_count{model="lstm"}' in text
    assert 'lstm_served_version{model="lstm"} 2.0' in text


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.json() == {"error": "Not Found"}


# ---- who may change the store ---------------------------------------------------------


def test_without_token_remote_clients_may_not_mutate(served_store: model_store.ModelStore) -> None:
    with make_client(served_store, client=REMOTE) as client:
        response = client.put("/models/lstm/aliases/production", json={"version": 1})
        assert response.status_code == 403
        assert "loopback" in response.json()["error"]
        assert client.delete("/models/lstm/versions/1").status_code == 403
        assert client.get("/models").status_code == 200  # reading stays open
        assert client.post("/predict", json={"inputs": [[[0.1]]]}).status_code == 200
    assert served_store.aliases("lstm") == {}


def test_without_token_loopback_clients_may_mutate(served_store: model_store.ModelStore) -> None:
    with make_client(served_store, client=LOOPBACK) as client:
        assert client.put("/models/lstm/aliases/production", json={"version": 1}).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Basic c2VjcmV0"}, 401),
        ({"authorization": "Bearer wrong"}, 403),
        ({"authorization": "Bearer s3cret-token"}, 200),
        ({"authorization": "bearer s3cret-token"}, 200),
    ],
)
def test_token_rule_applies_to_every_client(
    served_store: model_store.ModelStore, headers: dict[str, str], status: int
) -> None:
    for address in (LOOPBACK, REMOTE):
        with make_client(served_store, client=address, api_token="s3cret-token") as client:
            response = client.put("/models/lstm/aliases/production", json={"version": 1}, headers=headers)
            assert response.status_code == status, (address, response.text)


def test_an_empty_token_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="set but empty"):
        Settings(api_token=" ")
