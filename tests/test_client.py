"""service.client against a real lstm-serve: predict (JSON and binary), models, promote, train, typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import model_store
from service.client import AuthError, BusyError, Client, ClientError, JobFailedError, NotFoundError, ServerError
from tests.conftest import save_tiny
from tests.test_e2e import TINY_PARAMS, Server, start_server, stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, model_store.ModelStore]]:
    root = tmp_path_factory.mktemp("client")
    store = model_store.ModelStore(root / "store")
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    running = start_server(store.root, root / "serve.log", LSTM_JOB_POLL_INTERVAL="0.1", LSTM_JOB_QUEUE_MAX="2")
    yield running, store
    stop(running)


def test_predict_json_and_binary_agree(server: tuple[Server, model_store.ModelStore]) -> None:
    x = np.sin(0.2 * np.arange(60, dtype=np.float32)).reshape(20, 3, 1)
    with Client(server[0].url) as client:
        as_json = client.predict(x)
        as_binary = client.predict(x, binary=True)
        assert as_json.shape == as_binary.shape == (20, 3, 1)
        assert np.allclose(as_json, as_binary, atol=1e-6)
        assert np.allclose(client.predict(x, version=1, binary=True), client.predict(x, version=1), atol=1e-6)


def test_models_and_promote(server: tuple[Server, model_store.ModelStore]) -> None:
    with Client(server[0].url) as client:
        (entry,) = client.models()
        assert [v["version"] for v in entry["versions"]][:2] == [1, 2]
        assert client.promote("lstm", 1)["serving_version"] == 1
        assert client.promote("lstm", 2)["serving_version"] == 2


def test_typed_errors(server: tuple[Server, model_store.ModelStore]) -> None:
    with Client(server[0].url) as client:
        with pytest.raises(NotFoundError):
            client.predict(np.zeros((3, 1, 1)), model="nope")
        with pytest.raises(ClientError, match="last dimension"):
            client.predict(np.zeros((3, 1, 2)))
        with pytest.raises(NotFoundError):
            client.job("missing")
    with Client(server[0].url, token="x") as client:  # the server has no token: loopback rule, still allowed
        assert client.promote("lstm", 2)["version"] == 2
    assert issubclass(AuthError, ClientError) and issubclass(BusyError, ClientError)
    assert not issubclass(ServerError, ClientError)


def test_train_wait_and_failure(server: tuple[Server, model_store.ModelStore], tmp_path: Path) -> None:
    with Client(server[0].url) as client:
        # Tiny jobs and generous waits: training on a busy machine can be 10-50x slower than idle.
        job = client.train(params=TINY_PARAMS | {"max_epochs": 2}, promote="never")
        result = job.wait(timeout=600, progress=False)
        assert result["promoted"] is False and result["version"] >= 3
        assert client.jobs()[0].id == job.id
        x = np.sin(0.3 * np.arange(40, dtype=np.float32)).reshape(20, 2, 1)
        with_data = client.train(preset="tutorial", params={"max_epochs": 2}, dataset=(x, -x), promote="never")
        assert with_data.wait(timeout=600, progress=False)["metrics"]["dataset_test_mse"] >= 0
        endless = client.train(params=TINY_PARAMS | {"max_epochs": 100_000}, promote="never")
        endless.cancel()
        with pytest.raises(JobFailedError, match="cancelled"):
            endless.wait(timeout=300, progress=False)
        with pytest.raises(ClientError, match="hidden_size"):
            client.train(params={"hidden_size": 0})
