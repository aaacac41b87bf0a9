"""The data plane every transport calls: inference, model metadata and readiness, in plain Python (no web framework).

REST routes (and later gRPC and WebSocket handlers) decode a request, call a DataPlane method with plain
values (names, version references, numpy arrays) and encode what it returns; errors are the domain errors
of service/errors.py and model_store, which each transport maps to its own statuses through one table.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version

import anyio.to_thread
import numpy as np
import torch

import model_store
from service import metrics, runtimes
from service.batching import Batcher, Timing
from service.config import Settings
from service.errors import InvalidInputError, NotReadyError, SequenceStateError, SequenceUnsupportedError
from service.inference_stats import Duration, InferenceStats, VersionStats
from service.predictor import Predictor, ServedModel
from service.schemas import (
    DEFAULT_MODEL,
    InferStatistics,
    ModelConfigBody,
    ModelConfigTensor,
    ModelMetadata,
    ModelStatistics,
    ServerMetadata,
    StatisticDuration,
    TensorMetadata,
)
from service.sequence_batcher import SequenceBatcher
from service.sequence_types import SequenceId, SequenceOutput, SequenceRouter, SequenceStep
from service.sequences import LiveSequence, SequenceTable
from service.tensors import brief

__all__ = ["DEFAULT_MODEL", "DataPlane", "parse_version"]
SERVER_NAME = "lstm-service"
EXTENSIONS = ("binary_tensor_data", "model_repository", "statistics", "model_configuration")
PLATFORM = runtimes.PLATFORMS[runtimes.TORCHSCRIPT]
# Triton's backend names for the platforms (ModelConfig.backend)
BACKENDS = {
    runtimes.PLATFORMS[runtimes.TORCHSCRIPT]: "pytorch",
    runtimes.PLATFORMS[runtimes.ONNXRUNTIME]: "onnxruntime",
}


def server_version() -> str:
    try:
        return version("lstm-service")
    except PackageNotFoundError:
        return "0"


def parse_version(raw: str) -> int | str:
    """A version reference from text (a URL part): a version number, or an alias (any other valid name);
    a numeric string is always a version."""
    if model_store.is_version_text(raw):
        return model_store.check_version(int(raw))
    try:
        return model_store.check_name(raw, "alias")
    except model_store.InvalidNameError:
        raise InvalidInputError(
            f"model version {brief(raw)} is neither a positive integer nor an alias name ({model_store.NAME_PATTERN})"
        ) from None


class DataPlane:
    """Runs the store's models for requests, says what they are, and whether this worker can answer."""

    def __init__(self, settings: Settings, store: model_store.Store, predictor: Predictor) -> None:
        self.settings = settings
        self.store = store
        self.predictor = predictor
        # One thread: torch already uses `torch_threads` inside a forward; more threads would only
        # make large requests contend. torch's thread count is per OS thread, so the inference
        # thread sets its own (otherwise it gets an OpenMP team that busy-waits on a second core).
        self.executor = ThreadPoolExecutor(
            1, "inference", initializer=torch.set_num_threads, initargs=(settings.torch_threads,)
        )
        self.stats = InferenceStats()
        self.batcher: Batcher | None = None
        if settings.batching:
            self.batcher = Batcher(
                self._forward_in_thread,
                max_batch=settings.batch_max_size,
                max_wait=settings.batch_max_wait_ms / 1000,
                on_batch=lambda name, size: metrics.BATCH_SIZE.labels(name).observe(size),
                inline_max_elements=settings.inline_max_elements,
            )
        self.sequences = SequenceTable(
            max_live=settings.max_sequences,
            idle_timeout=settings.sequence_idle_timeout,
            memory=settings.sequence_memory,
        )
        self.sequence_batcher: SequenceBatcher | None = None
        if settings.sequence_batching:
            self.sequence_batcher = SequenceBatcher(
                self._step_in_thread,
                max_batch=settings.sequence_batch_max_size,
                inline_max_elements=settings.inline_max_elements,
                on_batch=lambda name, size: metrics.SEQUENCE_BATCH_SIZE.labels(name).observe(size),
            )
        # With several workers, the router sends a step to the worker that holds its sequence (which calls
        # sequence_step(..., local=True) there); None: this worker holds every sequence it is sent.
        self.router: SequenceRouter | None = None

    @property
    def max_elements(self) -> int:
        """The most numbers one request's tensor may hold."""
        return self.settings.max_elements

    # ---- readiness -----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether any model is loaded."""
        return self.predictor.ready

    def serving(self) -> dict[str, int]:
        """The version this worker serves of each model."""
        return {name: served.version for name, served in self.predictor.serving().items()}

    def not_ready_message(self) -> str:
        database = " --database-url ..." if self.settings.database_url else ""  # the URL may hold a password
        return (
            f"no model is loaded: the store at {self.store.describe()} has no model yet; train one with "
            f"`lstm-train --store {self.settings.store_dir}{database}`"
            " (or POST /train) and it is served within "
            f"{self.settings.poll_interval:g} s"
        )

    def check_ready(self) -> None:
        """NotReadyError, saying how to get a model, until one is loaded."""
        if not self.ready:
            raise NotReadyError(self.not_ready_message())

    async def check_model_ready(self, name: str, version: int | str | None) -> None:
        """Raises unless the model (a version, an alias, or None for the serving one) can answer: 404 unknown,
        503 empty store; loads a named version."""
        await self.model_for(name, version)

    # ---- metadata ------------------------------------------------------------------------------------

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name=SERVER_NAME, version=server_version(), extensions=list(EXTENSIONS))

    def model_metadata(self, name: str, version: int | str | None) -> ModelMetadata:
        """The model's versions and the tensors of `version` (None: the serving one)."""
        versions = self.store.versions(name)
        if not versions:
            raise model_store.ModelNotFoundError(f"model {name!r} not found")
        # What this worker serves, and aliases as it last read them: metadata agrees with inference (and a
        # damaged alias file does not break a client that reads metadata before it infers).
        served = self.predictor.current(name) if version is None else None
        if served is not None:
            manifest = served.manifest
        elif version is None:
            manifest = self.store.manifest(name, self.store.resolve(name))
        else:
            manifest = self.store.manifest(name, self.predictor.version_of(name, version))
            served = self.predictor.cached(name, manifest.version)
        return ModelMetadata(
            name=name,
            versions=[str(v) for v in versions],
            # The runtime that runs it here when it is loaded; a version not loaded yet names TorchScript's
            # platform until a request loads it (the runtime is chosen, and verified, at load).
            platform=PLATFORM if served is None else runtimes.PLATFORMS[served.runtime_name],
            inputs=[TensorMetadata.of(spec) for spec in manifest.inputs],
            outputs=[TensorMetadata.of(spec) for spec in manifest.outputs],
        )

    def model_config(self, name: str, version: int | str | None) -> ModelConfigBody:
        """The model's configuration as Triton's ModelConfig names it: the tensors of `version` (None: serving)."""
        metadata = self.model_metadata(name, version)

        def tensors(specs: list[TensorMetadata]) -> list[ModelConfigTensor]:
            return [ModelConfigTensor(name=t.name, data_type=f"TYPE_{t.datatype}", dims=t.shape) for t in specs]

        return ModelConfigBody(
            name=name,
            platform=metadata.platform,  # the runtime that runs it here, as metadata says
            backend=BACKENDS[metadata.platform],
            version_policy={"all": {}},  # any stored version can be named in a request
            max_batch_size=0,
            input=tensors(metadata.inputs),
            output=tensors(metadata.outputs),
        )

    def model_statistics(self, name: str | None, version: int | str | None) -> list[ModelStatistics]:
        """This worker's statistics of `name` (None: every model it has run) and `version` (None: all of them).

        A known model that has not been run here yet answers zeros for its serving version."""
        if name is None:
            return [_statistics(stats) for stats in self.stats.of(None, None)]
        if not self.store.versions(name):
            raise model_store.ModelNotFoundError(f"model {name!r} not found")
        number = None if version is None else self.predictor.version_of(name, version)
        found = self.stats.of(name, number)
        if not found:
            served = self.predictor.current(name)
            shown = number if number is not None else (served.version if served is not None else None)
            if shown is not None:
                found = [VersionStats(name, shown)]
        return [_statistics(stats) for stats in found]

    # ---- inference -----------------------------------------------------------------------------------

    async def model_for(self, name: str, version: int | str | None) -> ServedModel:
        """The model a request asked for (a version, an alias, or None for the serving one); a non-serving
        version is loaded off the event loop."""
        if not self.predictor.ready and version is None:
            if not self.store.versions(name):
                raise NotReadyError(self.not_ready_message())
        found = self.predictor.resolve(name, version)
        if isinstance(found, ServedModel):
            return found
        return await anyio.to_thread.run_sync(self.predictor.load_version, name, found)

    async def infer(self, served: ServedModel, x: np.ndarray) -> np.ndarray:
        """Run the model on one request's (seq, batch, input) float32 array: batched with others when small,
        else alone. Returns (seq, batch, output) float32. Counted in the statistics of its version.

        A tiny request runs inline (a thread hop costs more than it does): here without batching, in the
        batcher when it is a batch of one.
        """
        started = time.perf_counter_ns()
        timing = Timing()
        try:
            output = await self._infer(served, x, timing)
        except BaseException:  # cancelled too: the request did not succeed
            self.stats.failed(served.name, served.version, time.perf_counter_ns() - started)
            raise
        self.stats.succeeded(
            served.name, served.version, x.shape[1], time.perf_counter_ns() - started, timing.compute_ns
        )
        return output

    async def _infer(self, served: ServedModel, x: np.ndarray, timing: Timing) -> np.ndarray:
        if self.batcher is not None and x.size <= self.settings.batch_max_elements:
            return await self.batcher.submit(served, x, timing)  # the batcher records the batch size
        if x.size <= self.settings.inline_max_elements:
            output = _timed(served, x, timing)
        else:
            output = await asyncio.get_running_loop().run_in_executor(self.executor, _timed, served, x, timing)
        metrics.BATCH_SIZE.labels(served.name).observe(x.shape[1])
        return output

    async def _forward_in_thread(self, served: ServedModel, x: np.ndarray) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.executor, served, x)

    # ---- stateful sequences (Triton's sequence batcher; rules in service/sequences.py) ------------------

    async def sequence_step(self, step: SequenceStep, *, local: bool = False) -> SequenceOutput:
        """Run one chunk of a sequence from the state its previous chunk left; returns its outputs (seq, 1, output).

        `local`: run it here even when a router is set (the router's call on the worker that owns the sequence).
        """
        x = step.samples
        if x.ndim != 3 or x.shape[1] != 1 or x.shape[0] < 1:
            raise InvalidInputError(
                f"a sequence request carries one sequence: input shape [seq, 1, input_size] with seq >= 1 was "
                f"expected but it has shape {list(x.shape)}; send other sequences with their own sequence_id"
            )
        if self.router is not None and not local:
            return await self.router.step(step)
        if step.start:
            served = await self.model_for(step.model, step.version)
            self._check_stateful(served)
            self._check_input_size(served, x)
            entry = self.sequences.start(step.model, step.sequence_id, served, step.version)
        else:
            entry = self.sequences.get(step.model, step.sequence_id)
            self._check_pinned(entry, step.version)
            self._check_input_size(entry.served, x)
        async with entry.lock:  # the chunks of one sequence run one at a time, in the order they came
            if not entry.live:
                raise SequenceStateError(
                    f"{entry.describe()} {entry.gone} while this chunk waited for the one before it; "
                    "start it again with sequence_start: true"
                )
            try:
                y, entry.h, entry.c = await self._step(entry.served, x, entry.h, entry.c)
            except Exception as exc:
                self.sequences.fail(entry, exc)
                raise
            self.sequences.touch(entry)
            if step.end:
                self.sequences.end(entry)
        metrics.SEQUENCE_STEPS.labels(step.model).inc()
        return SequenceOutput(model=step.model, version=entry.served.version, sequence_id=step.sequence_id, outputs=y)

    async def end_sequence(self, model: str, sequence_id: SequenceId, *, local: bool = False) -> bool:
        """Free a live sequence (e.g. its WebSocket closed); whether one was live. A chunk running keeps its answer."""
        if self.router is not None and not local:
            return await self.router.end(model, sequence_id)
        return self.sequences.end_id(model, sequence_id)

    @staticmethod
    def _check_stateful(served: ServedModel) -> None:
        if not served.stateful:
            raise SequenceUnsupportedError(
                f"model {served.name!r} version {served.version} was exported before sequence support (it has no "
                "state-carrying method), so it serves one-shot requests only; retrain it (or re-export it) with "
                "this lstm-service to use sequence_id"
            )

    @staticmethod
    def _check_input_size(served: ServedModel, x: np.ndarray) -> None:
        if x.shape[2] != served.input_size:
            raise InvalidInputError(
                f"input has shape {list(x.shape)} but its last dimension must be the model's input size "
                f"{served.input_size}"
            )

    def _check_pinned(self, entry: LiveSequence, requested: int | str | None) -> None:
        """A chunk may name no version, the reference its start named, or the pinned version's number."""
        if requested is None or requested == entry.requested:
            return
        if self.predictor.version_of(entry.model, requested) == entry.served.version:
            return
        raise SequenceStateError(
            f"{entry.describe()} is pinned to version {entry.served.version}, where it started, but this chunk "
            f"names version {requested!r}; send its chunks to /v2/models/{entry.model}/infer or "
            f"/v2/models/{entry.model}/versions/{entry.served.version}/infer, or start a new sequence"
        )

    async def _step(
        self, served: ServedModel, x: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.sequence_batcher is not None:
            return await self.sequence_batcher.submit(served, x, h, c)  # the batcher records the batch size
        metrics.SEQUENCE_BATCH_SIZE.labels(served.name).observe(1)
        if x.size <= self.settings.inline_max_elements:
            return served.step(x, h, c)
        return await self._step_in_thread(served, x, h, c)

    async def _step_in_thread(
        self, served: ServedModel, x: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, served.step, x, h, c)

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        if self.sequence_batcher is not None:
            await self.sequence_batcher.close()
        self.sequences.clear()
        self.executor.shutdown(wait=True)


def _timed(served: ServedModel, x: np.ndarray, timing: Timing) -> np.ndarray:
    started = time.perf_counter_ns()
    output = served(x)
    timing.compute_ns = time.perf_counter_ns() - started
    return output


def _duration(value: Duration) -> StatisticDuration:
    return StatisticDuration(count=value.count, ns=value.ns)


def _statistics(stats: VersionStats) -> ModelStatistics:
    zero = StatisticDuration(count=0, ns=0)  # what this server does not measure apart, or has not (no cache)
    return ModelStatistics(
        name=stats.name,
        version=str(stats.version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=zero,
            compute_infer=_duration(stats.compute_infer),
            compute_output=zero,
            cache_hit=zero,
            cache_miss=zero,
        ),
    )
