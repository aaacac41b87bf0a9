"""A serving worker's memory stays bounded however many distinct input shapes it sees (a real lstm-serve)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import model_store
from benchmarks import harness
from tests.test_e2e import start_server, stop
from training import LSTMRegressor, ModelConfig

pytestmark = pytest.mark.slow


rss_mib = harness.rss_mib


def test_worker_memory_stays_bounded_across_distinct_shapes(tmp_path: Path) -> None:
    # The default model's size: oneDNN's kernels for it take about 0.25 MiB per shape.
    store = model_store.ModelStore(tmp_path / "store")
    torch.manual_seed(0)
    module = model_store.script(LSTMRegressor(ModelConfig(hidden_size=32, num_layers=2)))
    spec = model_store.sequence_spec
    store.save("lstm", module, inputs=(spec("input", 1),), outputs=(spec("output", 1),), params={"seed": 0})
    server = start_server(store.root, tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:

            def send(lengths: range) -> None:
                for length in lengths:
                    x = np.sin(0.1 * np.arange(length, dtype=np.float32)).reshape(length, 1, 1)
                    response = client.post("/predict", json={"inputs": x.tolist()})
                    assert response.status_code == 200, response.text

            send(range(1, 301))  # more distinct shapes than the cache holds (256 by default)
            filled = rss_mib(server.process.pid)
            send(range(301, 1101))  # 800 more: with oneDNN's own 1024 entries this added about 200 MiB
            grown = rss_mib(server.process.pid) - filled
        assert grown < 60, f"RSS grew {grown:.0f} MiB over 800 new shapes"
    finally:
        stop(server)
