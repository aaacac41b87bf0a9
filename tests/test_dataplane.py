"""The data plane without any web framework: what gRPC or WebSocket handlers will call, with plain values."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

import model_store
from service.config import Settings
from service.dataplane import DataPlane, parse_version
from service.errors import InvalidInputError, NotReadyError
from service.poller import Poller
from service.predictor import Predictor
from tests.conftest import save_tiny


def open_dataplane(store: model_store.ModelStore) -> tuple[DataPlane, Poller]:
    predictor = Predictor(store)
    return DataPlane(Settings(store_dir=store.root), store, predictor), Poller(predictor, interval=60)


def test_the_data_plane_serves_metadata_and_inference_from_plain_values(store: model_store.ModelStore) -> None:
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    store.set_alias("lstm", "candidate", 1)
    dataplane, poller = open_dataplane(store)

    async def scenario() -> None:
        await poller.refresh()
        assert dataplane.ready and dataplane.serving() == {"lstm": 2}
        metadata = dataplane.model_metadata("lstm", None)
        assert metadata.versions == ["1", "2"] and metadata.inputs[0].shape == [-1, -1, 1]
        served = await dataplane.model_for("lstm", "candidate")
        assert served.version == 1
        x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(6, 2, 1)  # (seq, batch, 1)
        output = await dataplane.infer(served, x)
        assert served.module is not None
        with torch.inference_mode():
            expected = served.module(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(output, expected)
        await dataplane.close()

    asyncio.run(scenario())


def test_an_empty_store_is_not_ready_and_says_how_to_get_a_model(store: model_store.ModelStore) -> None:
    dataplane, poller = open_dataplane(store)

    async def scenario() -> None:
        await poller.refresh()
        assert not dataplane.ready
        with pytest.raises(NotReadyError, match="lstm-train --store"):
            dataplane.check_ready()
        with pytest.raises(NotReadyError, match="no model is loaded"):
            await dataplane.model_for("lstm", None)
        await dataplane.close()

    asyncio.run(scenario())


def test_a_version_reference_is_a_number_or_an_alias() -> None:
    assert parse_version("3") == 3
    assert parse_version("production") == "production"
    with pytest.raises(InvalidInputError, match="neither a positive integer nor an alias name"):
        parse_version("Not An Alias!")
