"""The loaded models: which version of each model serves, running them, and swapping versions live.

A ServedModel is immutable; swapping replaces the reference in one assignment, so a request
that picked a model keeps that exact version to the end and no request ever mixes two.
The new version is loaded and verified fully before the old one is dropped; a version that
fails verification is never served and the failure is kept for /models and /metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

import model_store

log = logging.getLogger("service.predictor")


@dataclass(frozen=True)
class ServedModel:
    """One loaded, verified version."""

    name: str
    version: int
    manifest: model_store.Manifest
    module: model_store.ScriptModule

    @property
    def input_size(self) -> int:
        return self.manifest.input_size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a (seq, batch, input) float32 array; returns (seq, batch, output) float32."""
        with torch.inference_mode():
            output: np.ndarray = self.module(torch.from_numpy(x)).numpy()
        return output


@dataclass
class LoadFailure:
    """The last version of a model that could not be loaded, and why."""

    version: int
    error: str
    at: float
    reported: bool = False  # counted in /metrics yet


class Predictor:
    """Holds the serving version of every model in the store and swaps them when the store changes."""

    def __init__(self, store: model_store.ModelStore, version_cache: int = 4) -> None:
        self.store = store
        self._serving: dict[str, ServedModel] = {}
        self._failures: dict[str, LoadFailure] = {}
        self._cache: OrderedDict[tuple[str, int], ServedModel] = OrderedDict()
        self._cache_size = version_cache
        self._lock = threading.Lock()  # one refresh or cache fill at a time; reads take no lock
        self.swaps = 0

    # ---- reading (event loop, no lock) ---------------------------------------------------

    @property
    def ready(self) -> bool:
        return bool(self._serving)

    def serving(self) -> dict[str, ServedModel]:
        return dict(self._serving)

    def failures(self) -> dict[str, LoadFailure]:
        return dict(self._failures)

    def current(self, name: str) -> ServedModel | None:
        return self._serving.get(name)

    def cached(self, name: str, version: int) -> ServedModel | None:
        """The model for (name, version) if it is loaded: serving or in the small cache."""
        served = self._serving.get(name)
        if served is not None and served.version == version:
            return served
        return self._cache.get((name, version))

    # ---- loading (worker threads) --------------------------------------------------------

    def _load(self, name: str, version: int) -> ServedModel:
        loaded = self.store.load(name, version)
        return ServedModel(name=name, version=version, manifest=loaded.manifest, module=loaded.module)

    def load_version(self, name: str, version: int) -> ServedModel:
        """Load a version that is not serving (for requests that name one); kept in a small LRU."""
        found = self.cached(name, version)
        if found is not None:
            return found
        with self._lock:
            found = self.cached(name, version)
            if found is not None:
                return found
            served = self._load(name, version)
            if self._cache_size:
                self._cache[(name, version)] = served
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            return served

    def refresh(self) -> list[str]:
        """Bring every model to the version the store says should serve; returns what changed.

        Blocking (reads and verifies checkpoints): call it from a thread, not the event loop.
        """
        changed = []
        with self._lock:
            for name in self.store.models():
                try:
                    wanted = self.store.resolve(name)
                except model_store.StoreError as exc:
                    log.warning("cannot resolve the serving version of %s: %s", name, exc)
                    continue
                current = self._serving.get(name)
                if current is not None and current.version == wanted:
                    continue
                failure = self._failures.get(name)
                if failure is not None and failure.version == wanted:
                    continue  # already reported; retried when the store points elsewhere
                try:
                    served = self._cache.pop((name, wanted), None) or self._load(name, wanted)
                except (model_store.StoreError, OSError) as exc:
                    self._failures[name] = LoadFailure(version=wanted, error=str(exc), at=time.time())
                    kept = f"still serving version {current.version}" if current else "nothing served"
                    log.error("refusing %s version %s (%s): %s", name, wanted, kept, exc)
                    continue
                self._failures.pop(name, None)
                self._serving[name] = served  # the swap: one reference assignment
                self.swaps += 1
                changed.append(name)
                previous = f"from version {current.version}" if current else "first load"
                log.info("serving %s version %s (%s)", name, wanted, previous)
            for name in set(self._serving) - set(self.store.models()):
                del self._serving[name]  # the whole model was removed from the store
                changed.append(name)
        return changed

    def resolve(self, name: str, version: int | None) -> ServedModel | int:
        """The loaded model for a request, or the version number that must be loaded first."""
        if version is None:
            served = self._serving.get(name)
            if served is not None:
                return served
            if name in self._failures:
                raise model_store.IntegrityError(
                    f"model {name!r} has no loadable version: {self._failures[name].error}"
                )
            self.store.resolve(name)  # raises ModelNotFoundError with the right message
            raise model_store.ModelNotFoundError(f"model {name!r} is not loaded yet")
        found = self.cached(name, version)
        if found is not None:
            return found
        return self.store.resolve(name, version)  # validates; the caller loads it off the loop
