"""Dynamic batching: batched answers equal unbatched ones, limits hold, requests never mix, failures stay local."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import model_store
from service.batching import Batcher, bucket, pad_and_stack
from service.predictor import ServedModel
from tests.conftest import make_client, save_tiny


@pytest.fixture
def served(store: model_store.ModelStore) -> ServedModel:
    save_tiny(store, seed=5)
    loaded = store.load("lstm", 1)
    return ServedModel(name="lstm", version=1, manifest=loaded.manifest, module=loaded.module)


def unbatched(served: ServedModel, x: np.ndarray) -> np.ndarray:
    assert served.module is not None
    with torch.inference_mode():
        output: np.ndarray = served.module(torch.from_numpy(x)).numpy()
    return output


def random_requests(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.uniform(-1, 1, (int(rng.integers(1, 70)), int(rng.integers(1, 5)), 1)).astype(np.float32)
        for _ in range(count)
    ]


def run_concurrently(
    batcher_kwargs: dict[str, float], served: ServedModel, inputs: list[np.ndarray]
) -> tuple[list[np.ndarray], list[int]]:
    sizes: list[int] = []
    executor = ThreadPoolExecutor(1)

    async def main() -> list[np.ndarray]:
        loop = asyncio.get_running_loop()

        async def forward(model: ServedModel, x: np.ndarray) -> np.ndarray:
            return await loop.run_in_executor(executor, model, x)

        batcher = Batcher(forward, on_batch=lambda _, size: sizes.append(size), **batcher_kwargs)  # type: ignore[arg-type]
        try:
            return list(await asyncio.gather(*(batcher.submit(served, x) for x in inputs)))
        finally:
            await batcher.close()

    try:
        return asyncio.run(main()), sizes
    finally:
        executor.shutdown()


def test_batched_answers_equal_unbatched_ones_for_mixed_lengths(served: ServedModel) -> None:
    inputs = random_requests(60, seed=1)
    outputs, sizes = run_concurrently({"max_batch": 64, "max_wait": 0.005}, served, inputs)
    assert len(sizes) < len(inputs)  # some requests really shared a forward pass
    for x, output in zip(inputs, outputs, strict=True):
        assert output.shape == x.shape
        assert np.max(np.abs(output - unbatched(served, x))) <= 1e-6


def test_batches_respect_the_size_limit(served: ServedModel) -> None:
    inputs = [np.full((8, 3, 1), i / 100, dtype=np.float32) for i in range(40)]
    outputs, sizes = run_concurrently({"max_batch": 7, "max_wait": 0.01}, served, inputs)
    # A batch stops growing once it holds max_batch sequences: at most max_batch - 1 + 3 columns.
    assert max(sizes) <= 7 - 1 + 3
    assert sum(sizes) == 40 * 3
    for i, output in enumerate(outputs):  # every request got its own answer back, none swapped
        assert np.max(np.abs(output - unbatched(served, inputs[i]))) <= 1e-6


def test_a_failing_forward_fails_only_its_batch(served: ServedModel) -> None:
    good = np.zeros((5, 1, 1), dtype=np.float32)
    bad = np.zeros((5, 1, 3), dtype=np.float32)  # wrong feature size: the module raises

    async def main() -> tuple[object, object, object]:
        executor = ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()

        async def forward(model: ServedModel, x: np.ndarray) -> np.ndarray:
            return await loop.run_in_executor(executor, model, x)

        batcher = Batcher(forward, max_batch=64, max_wait=0.0, on_batch=lambda *_: None)
        first = await asyncio.gather(batcher.submit(served, bad), return_exceptions=True)
        after = await batcher.submit(served, good)  # the worker survived
        await batcher.close()
        executor.shutdown()
        return first[0], after, None

    failure, after, _ = asyncio.run(main())
    assert isinstance(failure, Exception)
    assert isinstance(after, np.ndarray) and after.shape == (5, 1, 1)


def test_a_lone_tiny_request_runs_on_the_event_loop_and_queued_ones_still_batch(served: ServedModel) -> None:
    threads: list[int] = []  # one entry per forward that went through the thread path, with its batch size
    lone = np.full((20, 5, 1), 0.25, dtype=np.float32)
    crowd = [np.full((8, 2, 1), i / 100, dtype=np.float32) for i in range(30)]  # one length bucket

    async def main() -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
        executor = ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()

        async def forward(model: ServedModel, x: np.ndarray) -> np.ndarray:
            threads.append(x.shape[1])
            return await loop.run_in_executor(executor, model, x)

        batcher = Batcher(forward, max_batch=256, max_wait=0.0, on_batch=lambda *_: None, inline_max_elements=100)
        try:
            alone = await batcher.submit(served, lone)  # nothing else queued: runs inline
            together = list(await asyncio.gather(*(batcher.submit(served, x) for x in crowd)))
            big = np.full((30, 4, 1), 0.5, dtype=np.float32)  # 120 elements: over the inline limit
            over = await batcher.submit(served, big)
            inline_failure = await asyncio.gather(batcher.submit(served, lone[:, :, :0]), return_exceptions=True)
            assert isinstance(inline_failure[0], Exception)  # an inline forward that raises fails its request only
            return alone, together, over, await batcher.submit(served, lone)
        finally:
            await batcher.close()
            executor.shutdown()

    alone, together, over, again = asyncio.run(main())
    assert np.max(np.abs(alone - unbatched(served, lone))) <= 1e-6
    assert np.array_equal(again, alone)
    # The queued crowd made one batch in the thread, the big request went there alone, the lone tiny ones never did.
    assert threads == [60, 4]
    for x, output in zip(crowd, together, strict=True):
        assert np.max(np.abs(output - unbatched(served, x))) <= 1e-6


def test_buckets_are_powers_of_two() -> None:
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 64, 65, 1500)] == [1, 2, 4, 4, 8, 64, 128, 2048]


def test_pad_and_stack_pads_at_the_end_of_time() -> None:
    a = np.ones((2, 1, 1), dtype=np.float32)
    b = np.full((4, 2, 1), 2.0, dtype=np.float32)
    stacked = pad_and_stack([a, b])
    assert stacked.shape == (4, 3, 1)
    assert stacked[:, 0, 0].tolist() == [1, 1, 0, 0]
    assert stacked[:, 1:, 0].tolist() == [[2, 2]] * 4


def test_http_answers_are_the_same_with_and_without_batching(served_store: model_store.ModelStore) -> None:
    x = np.sin(0.3 * np.arange(60, dtype=np.float32)).reshape(20, 3, 1)
    answers = []
    for batching in (True, False):
        client: TestClient
        with make_client(served_store, batching=batching) as client:
            answers.append(np.array(client.post("/predict", json={"inputs": x.tolist()}).json()["outputs"]))
    assert np.max(np.abs(answers[0] - answers[1])) <= 1e-6


def test_invalid_requests_among_concurrent_ones_do_not_poison_their_batch(
    served_store: model_store.ModelStore,
) -> None:
    rng = np.random.default_rng(3)
    goods = [rng.uniform(-1, 1, (12, 2, 1)).astype(np.float32) for _ in range(24)]
    with make_client(served_store, batching=True, batch_max_wait_ms=20) as client:
        reference = [np.array(client.post("/predict", json={"inputs": x.tolist()}).json()["outputs"]) for x in goods]

        def send(i: int) -> tuple[int, int, object]:
            if i % 2:
                response = client.post("/predict", json={"inputs": [[[0.5]], [["x"]]]})
                return i, response.status_code, None
            response = client.post("/predict", json={"inputs": goods[i // 2].tolist()})
            return i, response.status_code, np.array(response.json()["outputs"])

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(send, range(48)))
        sizes = client.get("/metrics").text
    for i, status, output in results:
        if i % 2:
            assert status == 422
        else:
            assert status == 200
            assert np.max(np.abs(output - reference[i // 2])) <= 1e-6
    assert "lstm_inference_batch_size_bucket" in sizes
