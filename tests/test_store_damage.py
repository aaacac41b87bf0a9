"""Damage in the store stays with the model it touches: garbage alias files and manifests, junk folders,
files where folders belong, and symbolic links (never followed), in the store and through the service."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import model_store
from tests.conftest import make_client, save_tiny, wait_for
from tests.test_e2e import Server, start_server, stop

GARBAGE_ALIASES = {
    "not-json": (b"not json{", "not valid JSON"),
    "list": (b"[1, 2]", "expected a JSON object"),
    "string-version": (b'{"production": "abc"}', "a string ('abc')"),
    "float-version": (b'{"production": 2.7}', "is 2.7, not a version number"),
    "integral-float": (b'{"production": 2.0}', "is 2.0, not a version number"),
    "missing-version": (b'{"production": 9}', "version 9, which does not exist"),
    "negative": (b'{"production": -1}', "is -1, not a version number"),
    "zero": (b'{"production": 0}', "is 0, not a version number"),
    "bool": (b'{"production": true}', "a boolean (true)"),
    "huge": (b'{"production": 99999999999999999999}', "not a version number"),
    "nan": (b'{"production": NaN}', "not valid JSON"),
    "bad-alias-name": (b'{"../etc": 1}', "alias name '../etc' is not valid"),
    "duplicate": (b'{"production": 1, "production": 2}', "appears twice"),
    "null": (b"null", "found null"),
    "not-utf8": (b'{"production": "\xff"}', "not valid JSON"),
    "deep": (b"[" * 100_000, "not valid JSON"),
}


@pytest.fixture
def two_models(store: model_store.ModelStore) -> model_store.ModelStore:
    """`lstm` with versions 1, 2 (production on 1) and `other` with versions 1, 2."""
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    store.set_alias("lstm", model_store.PRODUCTION, 1)
    save_tiny(store, name="other", seed=3)
    save_tiny(store, name="other", seed=4)
    return store


def entry(client: TestClient, name: str) -> dict[str, Any]:
    response = client.get("/models")
    assert response.status_code == 200, response.text
    (found,) = [model for model in response.json()["models"] if model["name"] == name]
    return found  # type: ignore[no-any-return]


def predicted_version(client: TestClient, name: str, **body: object) -> int:
    response = client.post("/predict", json={"inputs": [[[0.5]]], "model": name, **body})
    assert response.status_code == 200, response.text
    return response.json()["version"]  # type: ignore[no-any-return]


# ---- the store ------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(GARBAGE_ALIASES))
def test_garbage_alias_file_is_damage_naming_the_file_and_the_problem(
    two_models: model_store.ModelStore, case: str
) -> None:
    raw, fragment = GARBAGE_ALIASES[case]
    (two_models.root / "lstm/aliases.json").write_bytes(raw)
    for call in (
        lambda: two_models.aliases("lstm"),
        lambda: two_models.resolve("lstm"),
        lambda: two_models.resolve("lstm", "production"),
        lambda: two_models.delete("lstm", 2),  # which versions are aliased cannot be known: refused
        lambda: two_models.remove_alias("lstm", "production"),
    ):
        with pytest.raises(model_store.DamagedModelError) as raised:
            call()
        assert raised.value.model == "lstm" and raised.value.path == "aliases.json"
        assert fragment in raised.value.reason, raised.value.reason
        assert len(str(raised.value)) < 400
    assert two_models.versions("lstm") == [1, 2]
    assert two_models.resolve("lstm", 2) == 2  # a version by number needs no alias
    assert two_models.resolve("other") == 2 and two_models.models() == ["lstm", "other"]


def test_set_alias_repairs_a_damaged_alias_file_keeping_its_valid_entries(
    two_models: model_store.ModelStore,
) -> None:
    damaged = b'{"canary": 1, "production": 2.7, "Bad": 1}'
    (two_models.root / "lstm/aliases.json").write_bytes(damaged)
    replaced = two_models.set_alias("lstm", "production", 2)
    assert replaced is not None and "2.7" in replaced.reason
    assert two_models.aliases("lstm") == {"canary": 1, "production": 2}
    assert (two_models.root / "lstm/aliases.json.damaged").read_bytes() == damaged  # kept to inspect
    assert two_models.set_alias("lstm", "production", 1) is None  # healthy now: nothing replaced


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"name": "lstm"}', b'{"name": "lstm", "version": "x", "inputs": 3}', b"\xff\xfe"],
)
def test_garbage_manifest_damages_that_version_only(two_models: model_store.ModelStore, raw: bytes) -> None:
    (two_models.root / "lstm/versions/2/manifest.json").write_bytes(raw)
    with pytest.raises(model_store.DamagedVersionError) as raised:
        two_models.manifest("lstm", 2)
    assert raised.value.version == 2 and raised.value.path == "versions/2/manifest.json"
    with pytest.raises(model_store.DamagedVersionError):
        two_models.load("lstm", 2)
    assert two_models.load("lstm", 1).manifest.version == 1
    report = two_models.inspect("lstm")
    assert [m.version for m in report.manifests] == [1]
    assert [d.path for d in report.damaged] == ["versions/2/manifest.json"]


def test_junk_in_versions_is_ignored_and_reported(two_models: model_store.ModelStore) -> None:
    versions = two_models.root / "lstm/versions"
    (versions / "abc").mkdir()
    (versions / "007").mkdir()
    (versions / "5").write_bytes(b"a file, not a folder")
    (versions / "6").mkdir()  # no manifest
    (versions / "-1").mkdir()
    assert two_models.versions("lstm") == [1, 2]
    reasons = {d.path: d.problem for d in two_models.inspect("lstm").damaged}
    assert set(reasons) == {"versions/-1", "versions/007", "versions/5", "versions/6", "versions/abc"}
    assert "not named by a version number" in reasons["versions/abc"]
    assert "not a folder" in reasons["versions/5"] and "no manifest.json" in reasons["versions/6"]


def test_model_folder_that_is_a_file_or_a_link_is_not_a_model(
    two_models: model_store.ModelStore, tmp_path: Path
) -> None:
    (two_models.root / "afile").write_bytes(b"not a model")
    outside = model_store.ModelStore(tmp_path / "outside")
    save_tiny(outside, name="evil", seed=9)
    (two_models.root / "evil").symlink_to(outside.root / "evil")
    (two_models.root / "lost+found").mkdir()  # not a model name: not ours, not reported
    scan = two_models.scan()
    assert scan.models == ["lstm", "other"]
    assert {d.model: d.reason for d in scan.damaged} == {
        "afile": "the model folder: not a folder",
        "evil": "the model folder: a symbolic link; the store follows none",
    }
    for name in ("evil", "afile"):
        with pytest.raises(model_store.DamagedModelError):
            two_models.load(name)
        with pytest.raises(model_store.DamagedModelError):  # no write goes through the link either
            save_tiny(two_models, name=name)
    assert outside.versions("evil") == [1]


def test_a_linked_lock_file_is_refused_before_a_writer_opens_it(
    two_models: model_store.ModelStore, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    lock = two_models.root / "lstm/.lock"
    lock.unlink()
    # filelock 4 opens with O_NOFOLLOW (an older one truncated the target); either way it is named damage now.
    lock.symlink_to(victim)
    for write in (
        lambda: save_tiny(two_models, seed=5),
        lambda: two_models.set_alias("lstm", "production", 2),
        lambda: two_models.delete("lstm", 2),
    ):
        with pytest.raises(model_store.DamagedModelError, match=".lock: a symbolic link"):
            write()
    assert victim.read_bytes() == b"precious"
    assert two_models.versions("lstm") == [1, 2] and two_models.aliases("lstm") == {"production": 1}


def test_linked_version_folder_and_files_are_refused(two_models: model_store.ModelStore, tmp_path: Path) -> None:
    versions = two_models.root / "lstm/versions"
    outside = model_store.ModelStore(tmp_path / "outside")
    save_tiny(outside, seed=9)
    (versions / "7").symlink_to(outside.root / "lstm/versions/1")
    assert two_models.versions("lstm") == [1, 2]  # a linked version folder is not a version
    reasons = [d.reason for d in two_models.inspect("lstm").damaged]
    assert reasons == ["versions/7: a symbolic link; the store follows none"]
    checkpoint = versions / "2/model.pt"
    checkpoint.unlink()
    checkpoint.symlink_to(versions / "1/model.pt")  # even a link to a file inside the store
    with pytest.raises(model_store.DamagedVersionError, match="model.pt: a symbolic link"):
        two_models.load("lstm", 2)
    fifo = versions / "1/report.png"
    os.mkfifo(fifo)  # would block a plain open() for ever
    manifest = json.loads((versions / "1/manifest.json").read_bytes())
    manifest["files"].append("report.png")
    (versions / "1/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(model_store.DamagedVersionError, match="not a regular file"):
        two_models.read_version_file("lstm", 1, "report.png")


# ---- the service, in process --------------------------------------------------------------


@pytest.fixture
def damaged_client(two_models: model_store.ModelStore) -> Iterator[TestClient]:
    """`lstm` serving version 1, then its alias file turned to garbage; `other` healthy."""
    with make_client(two_models) as client:
        assert predicted_version(client, "lstm") == 1
        (two_models.root / "lstm/aliases.json").write_bytes(b"not json{")
        assert wait_for(lambda: entry(client, "lstm")["damaged"] != [])
        # /models reads the store itself; /metrics shows what the poller has seen: wait for both.
        assert wait_for(lambda: 'lstm_model_damaged{model="lstm"} 1.0' in client.get("/metrics").text)
        yield client


def test_damaged_model_is_reported_and_keeps_serving_while_others_follow_promotions(
    damaged_client: TestClient, two_models: model_store.ModelStore
) -> None:
    client = damaged_client
    found = entry(client, "lstm")
    assert found["damaged"] == ["aliases.json: not valid JSON (Expecting value: line 1 column 1 (char 0))"]
    assert found["serving_version"] == 1 and found["aliases"] == {} and len(found["versions"]) == 2
    assert predicted_version(client, "lstm") == 1  # what it had loaded
    assert predicted_version(client, "lstm", version="production") == 1  # the alias as last read
    # The other model follows a promotion made through the API and one made by another process.
    response = client.put("/models/other/aliases/production", json={"version": 1})
    assert response.status_code == 200 and response.json()["serving_version"] == 1, response.text
    assert predicted_version(client, "other") == 1
    two_models.set_alias("other", "production", 2)
    assert wait_for(lambda: predicted_version(client, "other") == 2)
    metrics = client.get("/metrics").text
    assert 'lstm_model_damaged{model="lstm"} 1.0' in metrics
    # OIP metadata and readiness agree with inference: the version served, aliases as last read.
    for path in ("/v2/models/lstm", "/v2/models/lstm/versions/production", "/v2/models/lstm/versions/2/ready"):
        assert client.get(path).status_code == 200, path
    assert client.get("/v2/models/lstm/versions/staging").status_code == 404
    refused = client.delete("/models/lstm/versions/2")  # which versions are aliased cannot be known
    assert refused.status_code == 503 and "aliases.json: not valid JSON" in refused.json()["error"]
    assert client.delete("/models/lstm/aliases/production").status_code == 503


def test_put_alias_repairs_the_damaged_model(damaged_client: TestClient, two_models: model_store.ModelStore) -> None:
    response = damaged_client.put("/models/lstm/aliases/production", json={"version": 2})
    assert response.status_code == 200, response.text
    assert response.json()["repaired"].startswith("aliases.json: not valid JSON")
    assert response.json()["serving_version"] == 2
    assert entry(damaged_client, "lstm")["damaged"] == []
    assert 'lstm_model_damaged{model="lstm"} 0.0' in damaged_client.get("/metrics").text
    assert two_models.aliases("lstm") == {"production": 2}


def test_models_lists_files_and_links_named_like_models_as_damaged(
    two_models: model_store.ModelStore, tmp_path: Path
) -> None:
    (two_models.root / "afile").write_bytes(b"x")
    outside = model_store.ModelStore(tmp_path / "outside")
    save_tiny(outside, name="evil", seed=9)
    (two_models.root / "evil").symlink_to(outside.root / "evil")
    (two_models.root / "other/versions/2/manifest.json").write_bytes(b"[]")
    with make_client(two_models) as client:
        body = client.get("/models").json()
        assert [model["name"] for model in body["models"]] == ["lstm", "other"]
        assert {d["name"] for d in body["damaged"]} == {"afile", "evil"}
        assert entry(client, "other")["damaged"][0].startswith("versions/2/manifest.json: not a valid manifest")
        assert client.get("/models/other/versions/2").status_code == 409
        assert entry(client, "other")["load_error"]["version"] == 2  # its newest version, which would serve
        refused = client.post("/predict", json={"inputs": [[[0.5]]], "model": "other"})
        assert refused.status_code == 503 and "no loadable version" in refused.json()["error"]
        assert predicted_version(client, "other", version=1) == 1
        evil = client.post("/predict", json={"inputs": [[[0.5]]], "model": "evil"})
        assert evil.status_code == 503 and "symbolic link" in evil.json()["error"]
        assert client.get("/v2/models/evil").status_code == 503
        assert client.get("/readyz").json()["serving"] == {"lstm": 1}
        assert 'lstm_model_damaged{model="evil"} 1.0' in client.get("/metrics").text


def test_linked_report_is_not_served(served_store: model_store.ModelStore) -> None:
    report = served_store.root / "lstm/versions/1/report.png"
    report.unlink()
    report.symlink_to("/etc/passwd")
    with make_client(served_store) as client:
        response = client.get("/models/lstm/versions/1/report.png")
        assert response.status_code == 409 and "symbolic link" in response.json()["error"]
        assert "root:" not in response.text
        assert client.get("/models/lstm/versions/2/report.png").status_code == 200


# ---- the service, a real lstm-serve ----------------------------------------------------------


def log_lines(server: Server, fragment: str) -> list[str]:
    return [line for line in server.log.read_text().splitlines() if fragment in line]


@pytest.mark.slow
def test_garbage_alias_file_at_start_neither_fails_start_up_nor_stops_other_models(
    two_models: model_store.ModelStore, tmp_path: Path
) -> None:
    (two_models.root / "lstm/aliases.json").write_bytes(b'{"production": 2.7}')
    server = start_server(two_models.root, tmp_path / "serve.log", workers=2)  # ready: `other` serves
    try:
        models = httpx.get(f"{server.url}/models", timeout=10)
        assert models.status_code == 200
        (lstm,) = [m for m in models.json()["models"] if m["name"] == "lstm"]
        assert (
            lstm["damaged"]
            == ["aliases.json: alias 'production' is 2.7, not a version number (an integer from 1 to 2147483647)"]
            and lstm["serving_version"] is None
        )
        refused = httpx.post(f"{server.url}/predict", json={"inputs": [[[0.5]]]}, timeout=10)
        assert refused.status_code == 503 and "is 2.7" in refused.json()["error"]  # never served as 2
        # Both workers follow the other model's promotion (a new connection each time lands on either).
        promoted = httpx.put(f"{server.url}/models/other/aliases/production", json={"version": 1}, timeout=30)
        assert promoted.status_code == 200, promoted.text
        assert wait_for(
            lambda: all(
                httpx.post(f"{server.url}/predict", json={"inputs": [[[0.5]]], "model": "other"}).json()["version"] == 1
                for _ in range(10)
            )
        )
        time.sleep(2)  # ten polls of each worker: the problem is still logged once per worker
        assert len(log_lines(server, "model lstm is damaged")) == 2, server.log.read_text()[-3000:]
        assert log_lines(server, "Traceback") == []
        repaired = httpx.put(f"{server.url}/models/lstm/aliases/production", json={"version": 2}, timeout=30)
        assert repaired.status_code == 200 and "2.7" in repaired.json()["repaired"]
        assert wait_for(
            lambda: all(
                httpx.post(f"{server.url}/predict", json={"inputs": [[[0.5]]]}).status_code == 200 for _ in range(10)
            )
        )
        assert wait_for(lambda: len(log_lines(server, "model lstm is no longer damaged")) == 2)
    finally:
        stop(server)


@pytest.mark.slow
def test_links_out_of_the_store_are_not_followed_by_lstm_serve(
    two_models: model_store.ModelStore, tmp_path: Path
) -> None:
    outside = model_store.ModelStore(tmp_path / "outside")
    save_tiny(outside, name="evil", seed=9, extra_files={"report.png": b"\x89PNG outside"})
    (two_models.root / "evil").symlink_to(outside.root / "evil")
    save_tiny(two_models, seed=5, extra_files={"report.png": b"\x89PNG inside"})  # lstm version 3
    report = two_models.root / "lstm/versions/3/report.png"
    report.unlink()
    report.symlink_to("/etc/passwd")
    server = start_server(two_models.root, tmp_path / "serve.log")
    try:
        picture = httpx.get(f"{server.url}/models/lstm/versions/3/report.png", timeout=10)
        assert picture.status_code == 409 and "root:" not in picture.text
        assert picture.headers["content-type"] == "application/json"
        assert "versions/3/report.png: a symbolic link" in picture.json()["error"]
        evil = httpx.post(f"{server.url}/predict", json={"inputs": [[[0.5]]], "model": "evil"}, timeout=10)
        assert evil.status_code == 503 and "symbolic link" in evil.json()["error"]
        assert httpx.get(f"{server.url}/models/evil/versions/1/report.png", timeout=10).status_code == 503
        body = httpx.get(f"{server.url}/models", timeout=10).json()
        assert "evil" not in [m["name"] for m in body["models"]]
        assert body["damaged"] == [
            {"name": "evil", "error": "the model folder: a symbolic link; the store follows none"}
        ]
        assert "evil" not in httpx.get(f"{server.url}/readyz", timeout=10).json()["serving"]
        assert log_lines(server, "Traceback") == []
    finally:
        stop(server)
