"""Stateful sequences: chunked equals one-shot over OIP REST and the data plane, Triton's rules, limits, expiry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

import model_store
from service import Settings
from service.components import Components
from service.dataplane import DataPlane
from service.errors import BusyError, InvalidInputError, SequenceStateError, SequenceUnsupportedError
from service.sequence_types import SequenceId, SequenceOutput, SequenceRouter, SequenceStep
from tests.conftest import make_client, save_tiny, tiny_module, wait_for
from training import (
    LSTMRegressor,
    ModelConfig,
    TrainingError,
    check_sequence_parity,
    preset,
    run,
    sequence_support,
)

TOLERANCE = 1e-5
URL = "/v2/models/lstm/infer"


@pytest.fixture
def stateful_store(store: model_store.ModelStore) -> model_store.ModelStore:
    """Version 1 exported before sequence support, version 2 (serving) with forward_state."""
    save_tiny(store, seed=1)
    save_tiny(store, seed=2, stateful=True, hidden_size=6)
    return store


@pytest.fixture
def seq_client(stateful_store: model_store.ModelStore) -> Iterator[TestClient]:
    with make_client(stateful_store) as test_client:
        yield test_client


def samples(length: int, offset: float = 0.0) -> np.ndarray:
    x: np.ndarray = np.sin(offset + 0.3 * np.arange(length)).astype(np.float32)
    return x


def body(x: np.ndarray, **parameters: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [len(x), 1, 1], "data": x.tolist()}]
    }
    if parameters:
        request["parameters"] = parameters
    return request


def binary_post(client: TestClient, url: str, x: np.ndarray, **parameters: Any) -> tuple[dict[str, Any], np.ndarray]:
    raw = x.astype("<f4").tobytes()
    header = {
        "parameters": {**parameters, "binary_data_output": True},
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [len(x), 1, 1], "parameters": {"binary_data_size": len(raw)}}
        ],
    }
    header_bytes = json.dumps(header).encode()
    response = client.post(
        url,
        content=header_bytes + raw,
        headers={"Inference-Header-Content-Length": str(len(header_bytes)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    return json.loads(response.content[:length]), np.frombuffer(response.content[length:], "<f4")


def one_shot(client: TestClient, x: np.ndarray, url: str = URL) -> np.ndarray:
    response = client.post(url, json=body(x))
    assert response.status_code == 200, response.text
    return np.array(response.json()["outputs"][0]["data"], np.float32)


def chunked(
    client: TestClient, x: np.ndarray, cuts: list[int], sequence_id: str | int, binary: bool = False, url: str = URL
) -> np.ndarray:
    bounds = [0, *cuts, len(x)]
    outputs = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        flags = {"sequence_id": sequence_id, "sequence_start": i == 0, "sequence_end": b == len(x)}
        if binary:
            header, data = binary_post(client, url, x[a:b], **flags)
        else:
            response = client.post(url, json=body(x[a:b], **flags))
            assert response.status_code == 200, response.text
            header = response.json()
            data = np.array(header["outputs"][0]["data"], np.float32)
        assert header["parameters"] == {"sequence_id": sequence_id}
        assert header["outputs"][0]["shape"] == [b - a, 1, 1]
        outputs.append(data)
    return np.concatenate(outputs)


@st.composite
def chunkings(draw: st.DrawFn) -> tuple[int, list[int]]:
    length = draw(st.integers(1, 60))
    cuts = draw(st.lists(st.integers(1, max(1, length - 1)), max_size=10, unique=True)) if length > 1 else []
    return length, sorted(cuts)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunking=chunkings(), binary=st.booleans(), numeric_id=st.booleans())
def test_chunked_rest_equals_one_shot(
    seq_client: TestClient, chunking: tuple[int, list[int]], binary: bool, numeric_id: bool
) -> None:
    length, cuts = chunking
    x = samples(length, offset=len(cuts))
    sequence_id: str | int = 42 if numeric_id else "sensor-1"
    got = chunked(seq_client, x, cuts, sequence_id, binary=binary)
    assert np.abs(got - one_shot(seq_client, x)).max() <= TOLERANCE


def test_chunks_of_one_equal_one_shot_over_both_encodings(seq_client: TestClient) -> None:
    x = samples(40)
    expected = one_shot(seq_client, x)
    cuts = list(range(1, 40))
    assert np.abs(chunked(seq_client, x, cuts, "ones-json") - expected).max() <= TOLERANCE
    assert np.abs(chunked(seq_client, x, cuts, "ones-binary", binary=True) - expected).max() <= TOLERANCE


def test_step_without_start_is_409_that_says_so(seq_client: TestClient) -> None:
    response = seq_client.post(URL, json=body(samples(3), sequence_id="never"))
    assert response.status_code == 409
    assert "sequence_start: true" in response.json()["error"]
    assert "not live" in response.json()["error"]


def test_ended_sequence_says_it_ended(seq_client: TestClient) -> None:
    response = seq_client.post(URL, json=body(samples(3), sequence_id=7, sequence_start=True, sequence_end=True))
    assert response.status_code == 200
    again = seq_client.post(URL, json=body(samples(3), sequence_id=7))
    assert again.status_code == 409
    assert "ended" in again.json()["error"]


def test_version_without_state_method_is_a_clear_409(seq_client: TestClient) -> None:
    response = seq_client.post(
        "/v2/models/lstm/versions/1/infer", json=body(samples(3), sequence_id="old", sequence_start=True)
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert "exported before sequence support" in error and "retrain" in error
    # It still serves one-shot requests.
    assert seq_client.post("/v2/models/lstm/versions/1/infer", json=body(samples(3))).status_code == 200


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"sequence_start": True}, "no sequence_id"),
        ({"sequence_end": True}, "no sequence_id"),
        ({"sequence_id": ""}, "non-empty string"),
        ({"sequence_id": "x" * 257}, "at most 256 characters"),
        ({"sequence_id": 0}, "[1, 2**64 - 1]"),
        ({"sequence_id": -3}, "[1, 2**64 - 1]"),
        ({"sequence_id": 1.5}, "non-empty string"),
        ({"sequence_id": True}, "a boolean"),
        ({"sequence_id": None}, "missing or null"),
        ({"sequence_id": [1]}, "a list"),
        ({"sequence_id": "a", "sequence_start": "yes"}, "'sequence_start' is a string"),
        ({"sequence_id": "a", "sequence_end": 1}, "'sequence_end' is a number"),
    ],
)
def test_bad_sequence_parameters_are_422(seq_client: TestClient, parameters: dict[str, Any], expected: str) -> None:
    response = seq_client.post(URL, json=body(samples(2), **parameters))
    assert response.status_code == 422, response.text
    assert expected in response.json()["error"]


def test_batch_other_than_one_is_422(seq_client: TestClient) -> None:
    request = {
        "parameters": {"sequence_id": "b", "sequence_start": True},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 2, 1], "data": [0.0] * 6}],
    }
    response = seq_client.post(URL, json=request)
    assert response.status_code == 422
    assert "[seq, 1, input_size]" in response.json()["error"]


# ---- the data plane ---------------------------------------------------------------------------------------


async def open_dataplane(store: model_store.ModelStore, **overrides: Any) -> Components:
    components = await Components.open(Settings(store_dir=store.root, **overrides))
    await components.poller.refresh()
    return components


def step(
    x: np.ndarray, sequence_id: str | int, start: bool = False, end: bool = False, version: Any = None
) -> SequenceStep:
    return SequenceStep(
        model="lstm", version=version, sequence_id=sequence_id, start=start, end=end, samples=x.reshape(-1, 1, 1)
    )


async def run_sequence(dataplane: DataPlane, x: np.ndarray, cuts: list[int], sequence_id: str | int) -> np.ndarray:
    bounds = [0, *cuts, len(x)]
    outputs = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        out = await dataplane.sequence_step(step(x[a:b], sequence_id, start=i == 0, end=b == len(x)))
        assert out.outputs.shape == (b - a, 1, 1)
        outputs.append(out.outputs.reshape(-1))
    return np.concatenate(outputs)


async def one_shot_dataplane(dataplane: DataPlane, x: np.ndarray) -> np.ndarray:
    served = await dataplane.model_for("lstm", None)
    return served(x.reshape(-1, 1, 1)).reshape(-1)


@pytest.mark.parametrize("batching", [True, False])
def test_interleaved_sequences_never_mix_state(stateful_store: model_store.ModelStore, batching: bool) -> None:
    async def main() -> list[float]:
        components = await open_dataplane(stateful_store, sequence_batching=batching)
        dataplane = components.dataplane
        try:
            rng = np.random.default_rng(0)
            inputs = [samples(int(rng.integers(5, 40)), offset=float(i)) for i in range(24)]
            cut_lists = [sorted(set(rng.integers(1, len(x), size=5).tolist())) for x in inputs]
            results = await asyncio.gather(
                *(
                    run_sequence(dataplane, x, cuts, f"s{i}")
                    for i, (x, cuts) in enumerate(zip(inputs, cut_lists, strict=True))
                )
            )
            diffs = []
            for x, got in zip(inputs, results, strict=True):
                diffs.append(float(np.abs(got - await one_shot_dataplane(dataplane, x)).max()))
            assert len(dataplane.sequences) == 0  # every sequence ended
            return diffs
        finally:
            await components.close()

    assert max(asyncio.run(main())) <= TOLERANCE


def test_batching_on_and_off_give_the_same_answers(stateful_store: model_store.ModelStore) -> None:
    async def answers(batching: bool) -> list[np.ndarray]:
        components = await open_dataplane(stateful_store, sequence_batching=batching)
        try:
            xs = [samples(30, offset=i / 3) for i in range(16)]
            cuts = [1, 2, 5, 10, 20]
            return list(
                await asyncio.gather(*(run_sequence(components.dataplane, x, cuts, i + 1) for i, x in enumerate(xs)))
            )
        finally:
            await components.close()

    on, off = asyncio.run(answers(True)), asyncio.run(answers(False))
    for a, b in zip(on, off, strict=True):
        assert np.abs(a - b).max() <= TOLERANCE


def test_sequences_batch_together(stateful_store: model_store.ModelStore) -> None:
    """Steps of different sequences that arrive together share forward passes (the batch histogram shows > 1)."""

    def batches(largest: str) -> float:
        found = REGISTRY.get_sample_value("lstm_sequence_batch_size_bucket", {"model": "lstm", "le": largest})
        return found or 0.0

    async def main() -> None:
        components = await open_dataplane(stateful_store)
        try:
            await asyncio.gather(*(run_sequence(components.dataplane, samples(8), [4], i + 1) for i in range(64)))
        finally:
            await components.close()

    before = batches("+Inf") - batches("1.0")
    asyncio.run(main())
    assert batches("+Inf") - batches("1.0") > before  # forward passes of more than one sequence


def test_limit_of_live_sequences_is_busy(stateful_store: model_store.ModelStore) -> None:
    async def main() -> None:
        components = await open_dataplane(stateful_store, max_sequences=3)
        dataplane = components.dataplane
        try:
            for i in range(3):
                await dataplane.sequence_step(step(samples(2), i + 1, start=True))
            with pytest.raises(BusyError, match="LSTM_MAX_SEQUENCES=3"):
                await dataplane.sequence_step(step(samples(2), 99, start=True))
            # A start on a live id restarts it (no new slot needed); an end frees a slot.
            await dataplane.sequence_step(step(samples(2), 1, start=True))
            await dataplane.sequence_step(step(samples(2), 2, end=True))
            await dataplane.sequence_step(step(samples(2), 99, start=True))
        finally:
            await components.close()

    asyncio.run(main())


def test_limit_over_rest_is_429(stateful_store: model_store.ModelStore) -> None:
    with make_client(stateful_store, max_sequences=1) as client:
        assert client.post(URL, json=body(samples(2), sequence_id="a", sequence_start=True)).status_code == 200
        response = client.post(URL, json=body(samples(2), sequence_id="b", sequence_start=True))
        assert response.status_code == 429
        assert "LSTM_MAX_SEQUENCES" in response.json()["error"]


def test_start_on_live_id_restarts_from_zero_state(stateful_store: model_store.ModelStore) -> None:
    async def main() -> float:
        components = await open_dataplane(stateful_store)
        dataplane = components.dataplane
        try:
            await dataplane.sequence_step(step(samples(10, offset=2.0), "r", start=True))
            x = samples(12)
            fresh = await run_sequence(dataplane, x, [5], "r")  # its first chunk restarts "r"
            return float(np.abs(fresh - await one_shot_dataplane(dataplane, x)).max())
        finally:
            await components.close()

    assert asyncio.run(main()) <= TOLERANCE


def test_idle_sequence_expires_and_is_remembered(stateful_store: model_store.ModelStore) -> None:
    def expired() -> float:
        return REGISTRY.get_sample_value("lstm_sequence_expired_total", {"model": "lstm"}) or 0.0

    expired_before = expired()
    with make_client(stateful_store, sequence_idle_timeout=0.2) as client:
        dataplane: DataPlane = client.app.state.components.dataplane  # type: ignore[attr-defined]
        assert client.post(URL, json=body(samples(2), sequence_id="idle", sequence_start=True)).status_code == 200
        # The reaper frees it (no request needed).
        assert wait_for(lambda: ("lstm", "idle") not in dataplane.sequences)
        response = client.post(URL, json=body(samples(2), sequence_id="idle"))
        assert response.status_code == 409
        assert "expired" in response.json()["error"] and "LSTM_SEQUENCE_IDLE_TIMEOUT" in response.json()["error"]
        assert expired() == expired_before + 1
        assert "lstm_sequence_expired_total" in client.get("/metrics").text
        # A new start of the same id works again.
        assert client.post(URL, json=body(samples(2), sequence_id="idle", sequence_start=True)).status_code == 200


def test_expiry_memory_is_bounded(stateful_store: model_store.ModelStore) -> None:
    async def main() -> None:
        components = await open_dataplane(stateful_store, sequence_memory=2)
        table = components.dataplane.sequences
        try:
            for i in range(4):
                await components.dataplane.sequence_step(step(samples(1), i + 1, start=True, end=True))
            with pytest.raises(SequenceStateError, match="ended"):
                table.get("lstm", 4)
            with pytest.raises(SequenceStateError, match="not live on this server"):
                table.get("lstm", 1)  # forgotten: only the last two are remembered
        finally:
            await components.close()

    asyncio.run(main())


def test_promotion_during_a_live_sequence_keeps_its_version(stateful_store: model_store.ModelStore) -> None:
    with make_client(stateful_store) as client:
        x = samples(20)
        expected = one_shot(client, x)  # version 2, serving
        first = client.post(URL, json=body(x[:8], sequence_id="pin", sequence_start=True))
        assert first.json()["model_version"] == "2"
        save_tiny(stateful_store, seed=3, stateful=True)  # version 3
        stateful_store.set_alias("lstm", model_store.PRODUCTION, 3)
        dataplane: DataPlane = client.app.state.components.dataplane  # type: ignore[attr-defined]
        assert wait_for(lambda: dataplane.serving().get("lstm") == 3)
        assert np.abs(one_shot(client, x) - expected).max() > TOLERANCE  # the new version answers differently
        rest = client.post(URL, json=body(x[8:], sequence_id="pin", sequence_end=True))
        assert rest.status_code == 200 and rest.json()["model_version"] == "2"
        got = np.concatenate([first.json()["outputs"][0]["data"], rest.json()["outputs"][0]["data"]])
        assert np.abs(got - expected).max() <= TOLERANCE


def test_chunk_naming_another_version_is_409(seq_client: TestClient) -> None:
    assert seq_client.post(URL, json=body(samples(2), sequence_id="v", sequence_start=True)).status_code == 200
    # Naming the pinned version by number is fine; another version is not.
    ok = seq_client.post("/v2/models/lstm/versions/2/infer", json=body(samples(2), sequence_id="v"))
    assert ok.status_code == 200
    response = seq_client.post("/v2/models/lstm/versions/1/infer", json=body(samples(2), sequence_id="v"))
    assert response.status_code == 409
    assert "pinned to version 2" in response.json()["error"]


def test_end_sequence_frees_state(stateful_store: model_store.ModelStore) -> None:
    async def main() -> None:
        components = await open_dataplane(stateful_store)
        dataplane = components.dataplane
        try:
            await dataplane.sequence_step(step(samples(3), "ws", start=True))
            assert await dataplane.end_sequence("lstm", "ws")
            assert not await dataplane.end_sequence("lstm", "ws")
            with pytest.raises(SequenceStateError, match="ended"):
                await dataplane.sequence_step(step(samples(3), "ws"))
        finally:
            await components.close()

    asyncio.run(main())


def test_dataplane_rejects_misuse(stateful_store: model_store.ModelStore) -> None:
    async def main() -> None:
        components = await open_dataplane(stateful_store)
        dataplane = components.dataplane
        try:
            wide = SequenceStep(
                model="lstm",
                version=None,
                sequence_id=1,
                start=True,
                end=False,
                samples=np.zeros((2, 3, 1), np.float32),
            )
            with pytest.raises(InvalidInputError, match="one sequence"):
                await dataplane.sequence_step(wide)
            with pytest.raises(SequenceUnsupportedError, match="exported before sequence support"):
                await dataplane.sequence_step(step(samples(2), 1, start=True, version=1))
        finally:
            await components.close()

    asyncio.run(main())


def test_plain_requests_still_answer_without_sequence_parameters(seq_client: TestClient) -> None:
    response = seq_client.post(URL, json=body(samples(4), binary_data_output=False))
    assert response.status_code == 200
    assert "parameters" not in response.json()


def test_tritonclient_sequence_requests(stateful_store: model_store.ModelStore) -> None:
    http = pytest.importorskip("tritonclient.http")
    x = samples(12).reshape(-1, 1, 1)
    with make_client(stateful_store) as client:
        expected = one_shot(client, x.reshape(-1))
        got = []
        for t in range(len(x)):
            chunk = http.InferInput("input", [1, 1, 1], "FP32")
            chunk.set_data_from_numpy(x[t : t + 1], binary_data=True)
            request, header_length = http.InferenceServerClient.generate_request_body(
                [chunk],
                outputs=[http.InferRequestedOutput("output", binary_data=True)],
                sequence_id=17,
                sequence_start=t == 0,
                sequence_end=t == len(x) - 1,
            )
            response = client.post(
                URL, content=request, headers={"Inference-Header-Content-Length": str(header_length)}
            )
            assert response.status_code == 200, response.text
            result = http.InferenceServerClient.parse_response_body(
                response.content, header_length=int(response.headers["Inference-Header-Content-Length"])
            )
            assert result.get_response()["parameters"] == {"sequence_id": 17}
            got.append(result.as_numpy("output").reshape(-1))
    assert np.abs(np.concatenate(got) - expected).max() <= TOLERANCE


def test_two_layer_model_carries_the_state_of_both_layers(store: model_store.ModelStore) -> None:
    save_tiny(store, seed=5, stateful=True, hidden_size=5, num_layers=2)
    with make_client(store) as client:
        x = samples(25)
        assert np.abs(chunked(client, x, [1, 2, 3, 10, 11], "deep") - one_shot(client, x)).max() <= TOLERANCE


# ---- the export ------------------------------------------------------------------------------------------


def test_training_exports_forward_state_and_records_parity(store: model_store.ModelStore) -> None:
    config = preset("robust").with_overrides(
        {"hidden_size": 6, "num_layers": 2, "max_epochs": 2, "batch_size": 8, "seq_len": 16, "short_batch_size": 0}
    )
    manifest = run(config, store).manifest
    assert manifest.sequence is not None
    assert (manifest.sequence.method, manifest.sequence.num_layers, manifest.sequence.hidden_size) == (
        "forward_state",
        2,
        6,
    )
    assert 0 <= manifest.sequence.parity_max_abs_diff <= 1e-5
    assert store.manifest("lstm", manifest.version).sequence == manifest.sequence  # it is in the file
    assert model_store.has_method(store.load("lstm", manifest.version).module, "forward_state")


class ForgetfulRegressor(LSTMRegressor):
    """A broken state method: it ignores the state it is given, so chunked differs from one-shot."""

    @model_store.export_method
    def forward_state(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden, (h_n, c_n) = self.lstm(x)  # (seq, batch, hidden), from zeros whatever h and c say
        output: torch.Tensor = self.head(hidden)
        return output, h_n, c_n


def test_sequence_parity_check_rejects_a_state_method_that_forgets() -> None:
    torch.manual_seed(0)
    config = ModelConfig(hidden_size=6)
    with pytest.raises(TrainingError, match="chunked outputs of forward_state differ"):
        check_sequence_parity(model_store.script(ForgetfulRegressor(config)), config, seed=0)
    with pytest.raises(TrainingError, match="no forward_state"):
        check_sequence_parity(tiny_module(stateful=False), config, seed=0)


def test_manifest_without_sequence_reads_as_none_and_round_trips(store: model_store.ModelStore) -> None:
    old = save_tiny(store, seed=1)
    raw = old.to_dict()
    del raw["sequence"]  # a manifest written before the field existed
    assert model_store.Manifest.from_dict(raw).sequence is None
    new = save_tiny(store, seed=2, stateful=True)
    assert new.sequence is not None
    assert model_store.Manifest.from_json(new.to_json()) == new
    assert store.manifest("lstm", old.version).sequence is None


def test_damaged_sequence_entry_is_a_damaged_version(store: model_store.ModelStore) -> None:
    manifest = save_tiny(store, seed=1, stateful=True)
    path = store.version_file("lstm", manifest.version, "manifest.json")
    raw = json.loads(path.read_text())
    raw["sequence"] = {"method": "forward_state"}
    path.write_text(json.dumps(raw))
    with pytest.raises(model_store.DamagedModelError, match="not a valid manifest"):
        store.manifest("lstm", manifest.version)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunking=chunkings(), batching=st.booleans())
def test_chunked_dataplane_equals_one_shot(
    stateful_store: model_store.ModelStore, chunking: tuple[int, list[int]], batching: bool
) -> None:
    store = stateful_store  # read only: every example may share it
    length, cuts = chunking
    x = samples(length, offset=0.5)

    async def main() -> float:
        components = await open_dataplane(store, sequence_batching=batching)
        try:
            got = await run_sequence(components.dataplane, x, cuts, "dp")
            return float(np.abs(got - await one_shot_dataplane(components.dataplane, x)).max())
        finally:
            await components.close()

    assert asyncio.run(main()) <= TOLERANCE


def test_chunks_of_one_sequence_sent_at_once_run_in_arrival_order(stateful_store: model_store.ModelStore) -> None:
    """Chunks queued together on one sequence take its lock in the order they came, whatever the batcher does."""

    async def main() -> float:
        components = await open_dataplane(stateful_store)
        dataplane = components.dataplane
        try:
            x = samples(30)
            bounds = [0, 1, 2, 4, 8, 9, 15, 22, 30]
            chunks = [
                step(x[a:b], "ordered", start=a == 0, end=b == len(x)) for a, b in zip(bounds, bounds[1:], strict=False)
            ]
            # Other sequences at the same time, so batches form.
            others = [run_sequence(dataplane, samples(30, offset=i), [3, 10], f"other-{i}") for i in range(8)]
            ordered = asyncio.gather(*(dataplane.sequence_step(chunk) for chunk in chunks))
            results, _ = await asyncio.gather(ordered, asyncio.gather(*others))
            got = np.concatenate([out.outputs.reshape(-1) for out in results])
            return float(np.abs(got - await one_shot_dataplane(dataplane, x)).max())
        finally:
            await components.close()

    assert asyncio.run(main()) <= TOLERANCE


def test_models_listing_says_which_versions_serve_sequences(seq_client: TestClient) -> None:
    (entry,) = seq_client.get("/models").json()["models"]
    assert [(v["version"], v["sequences"]) for v in entry["versions"]] == [(1, False), (2, True)]
    assert seq_client.get("/models/lstm/versions/1").json()["sequence"] is None
    sequence = seq_client.get("/models/lstm/versions/2").json()["sequence"]
    assert sequence["method"] == "forward_state" and sequence["hidden_size"] == 6


class LoopbackRouter:
    """A router whose owner is this same data plane: what a multi-worker router does, minus the hop."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.routed: list[SequenceId] = []

    async def step(self, step: SequenceStep) -> SequenceOutput:
        self.routed.append(step.sequence_id)
        return await self.dataplane.sequence_step(step, local=True)

    async def end(self, model: str, sequence_id: SequenceId) -> bool:
        self.routed.append(sequence_id)
        return await self.dataplane.end_sequence(model, sequence_id, local=True)


def test_a_router_gets_every_step_unless_local(stateful_store: model_store.ModelStore) -> None:
    async def main() -> None:
        components = await open_dataplane(stateful_store)
        dataplane = components.dataplane
        router = LoopbackRouter(dataplane)
        hook: SequenceRouter = router  # mypy checks it against the protocol
        dataplane.router = hook
        try:
            x = samples(9)
            got = await run_sequence(dataplane, x, [3, 4], "routed")
            assert router.routed == ["routed"] * 3
            assert np.abs(got - await one_shot_dataplane(dataplane, x)).max() <= TOLERANCE
            await dataplane.sequence_step(step(x, "local", start=True), local=True)
            assert await dataplane.end_sequence("lstm", "local")
            assert router.routed == ["routed"] * 3 + ["local"]
            with pytest.raises(InvalidInputError):  # a malformed chunk is refused before it is routed
                await dataplane.sequence_step(
                    SequenceStep("lstm", None, "wide", True, False, np.zeros((2, 2, 1), np.float32))
                )
            assert len(router.routed) == 4
        finally:
            await components.close()

    asyncio.run(main())


class FragileRegressor(LSTMRegressor):
    """A model whose state method fails on samples above 100 (a real TorchScript error, raised inside the forward)."""

    @model_store.export_method
    def forward_state(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if bool(x.abs().max() > 100.0):
            raise RuntimeError("sample above 100")
        hidden, (h_n, c_n) = self.lstm(x, (h, c))  # (seq, batch, hidden)
        output: torch.Tensor = self.head(hidden)
        return output, h_n, c_n


@pytest.mark.parametrize("batching", [True, False])
def test_a_failed_chunk_ends_its_sequence_with_a_clear_error_next(
    store: model_store.ModelStore, batching: bool
) -> None:
    torch.manual_seed(0)
    config = ModelConfig(hidden_size=4)
    module = model_store.script(FragileRegressor(config))
    store.save(
        "lstm",
        module,
        inputs=(model_store.sequence_spec("input", 1),),
        outputs=(model_store.sequence_spec("output", 1),),
        sequence=sequence_support(module, config, 0),
    )

    async def main() -> None:
        components = await open_dataplane(store, sequence_batching=batching)
        dataplane = components.dataplane
        try:
            await dataplane.sequence_step(step(samples(3), "f", start=True))
            with pytest.raises(Exception, match="sample above 100"):  # torch.jit.Error
                await dataplane.sequence_step(step(np.full(2, 500.0, np.float32), "f"))
            # Never a silently wrong answer from a state that missed a chunk: the sequence is gone, and says why.
            with pytest.raises(SequenceStateError, match="failed"):
                await dataplane.sequence_step(step(samples(2), "f"))
            assert len(dataplane.sequences) == 0
        finally:
            await components.close()

    asyncio.run(main())
