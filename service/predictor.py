"""The loaded models: which version of each model serves, running them, and swapping versions live.

A ServedModel is immutable; swapping replaces the reference in one assignment, so a request
that picked a model keeps that exact version to the end and no request ever mixes two.
The new version is loaded and verified fully before the old one is dropped; a version that
fails verification is never served and the failure is kept for /models and /metrics.

Damage stays with the model it touches: each model is refreshed in its own try, so a garbage alias
file or a linked folder leaves that model serving what it had (or nothing), is logged once per
distinct problem, and never stops the other models from following their promotions.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

import model_store
from service import runtimes
from service.conditions import Condition
from service.errors import NotReadyError

log = logging.getLogger("service.predictor")


@dataclass(frozen=True)
class ServedModel:
    """One loaded, verified version, and the runtime that runs it (TorchScript unless given one)."""

    name: str
    version: int
    manifest: model_store.Manifest
    module: model_store.ScriptModule | None  # None for an imported ONNX model (runtime is then its ONNX Runtime)
    runtime: runtimes.Runtime | None = None

    def __post_init__(self) -> None:
        if self.runtime is None:
            assert self.module is not None, "a version without a checkpoint needs its runtime"
            method = self.manifest.sequence.method if self.manifest.sequence is not None else None
            object.__setattr__(self, "runtime", runtimes.TorchScriptRuntime(self.module, method))

    @property
    def input_size(self) -> int:
        return self.manifest.input_size

    @property
    def runtime_name(self) -> runtimes.RuntimeName:
        """torchscript or onnxruntime."""
        return self.engine.name

    @property
    def runtime_note(self) -> str | None:
        """Why this runtime serves the version (e.g. why ONNX Runtime does not), when there is more to say."""
        return self.engine.note

    @property
    def engine(self) -> runtimes.Runtime:
        assert self.runtime is not None  # set in __post_init__
        return self.runtime

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a (seq, batch, input) float32 array; returns (seq, batch, output) float32."""
        return self.runtime(x)  # type: ignore[misc]  # set in __post_init__; no property on this hot path

    @functools.cached_property  # writes the instance __dict__, which a frozen dataclass allows
    def stateful(self) -> bool:
        """Whether this version carries state between chunks (its manifest says how and its module has the method);
        versions exported before sequence support serve one-shot requests only."""
        support = self.manifest.sequence
        return support is not None and self.module is not None and model_store.has_method(self.module, support.method)

    def initial_state(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """The state a sequence starts from: zeros h and c, each (num_layers, batch, hidden) float32."""
        support = self.manifest.sequence
        assert support is not None, "initial_state of a version without sequence support"
        shape = (support.num_layers, batch, support.hidden_size)
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One chunk from state (h, c): x (seq, batch, input), h and c (num_layers, batch, hidden), all float32;
        returns y (seq, batch, output) and the state after the chunk, h_n and c_n (num_layers, batch, hidden)."""
        assert self.manifest.sequence is not None, "step of a version without sequence support"
        return self.engine.step(x, h, c)


@dataclass
class LoadFailure:
    """The last version of a model that could not be loaded, and why."""

    version: int
    error: str
    at: float
    reported: bool = False  # counted in /metrics yet


@dataclass(frozen=True)
class Damage:
    """A model, or an entry of the store named like one, that the store reports damaged, and since when."""

    error: str
    at: float


class Predictor:
    """Holds the serving version of every model in the store and swaps them when the store changes."""

    def __init__(
        self,
        store: model_store.Store,
        version_cache: int = 4,
        runtime: runtimes.RuntimeChoice = "auto",
        onnx_threads: int = 1,
        onnx_max_elements: int | None = None,
    ) -> None:
        self.store = store
        self.runtime = runtime  # LSTM_RUNTIME: which engine runs each version (service/runtimes.py)
        self.onnx_threads = onnx_threads
        self.onnx_max_elements = onnx_max_elements
        self._serving: dict[str, ServedModel] = {}
        self._failures: dict[str, LoadFailure] = {}
        self._damage: dict[str, Damage] = {}
        # Each model's aliases as the last refresh read them (kept while the alias file is damaged), so a
        # request naming an alias gets what this worker serves for it, without a file read per request.
        self._aliases: dict[str, dict[str, int]] = {}
        self._store_trouble = Condition(log, "cannot list the models of the store")
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

    def damage(self) -> dict[str, Damage]:
        """Damaged models (and entries named like models), as of the last refresh."""
        return dict(self._damage)

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
        manifest = self.store.manifest(name, version)
        if not manifest.has_checkpoint:  # an imported ONNX model
            onnx = runtimes.choose_onnx_only(self.store, manifest, self.runtime, self.onnx_threads)
            return ServedModel(name=name, version=version, manifest=manifest, module=None, runtime=onnx)
        loaded = self.store.load(name, version)
        runtime = runtimes.choose(self.store, loaded, self.runtime, self.onnx_threads, self.onnx_max_elements)
        return ServedModel(name=name, version=version, manifest=loaded.manifest, module=loaded.module, runtime=runtime)

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

        Blocking (reads and verifies checkpoints): call it from a thread, not the event loop. Never raises
        for what one model's files hold; a store that cannot be listed at all is logged once and skipped.
        """
        changed: list[str] = []
        with self._lock:
            try:
                scan = self.store.scan()
            except model_store.StoreError as exc:  # e.g. the store folder became unreadable
                self._store_trouble.failing(str(exc))
                return changed
            self._store_trouble.ok()
            damage = {found.model: found.reason for found in scan.damaged}
            for name in scan.models:
                try:
                    if self._refresh_model(name):
                        changed.append(name)
                except model_store.ModelNotFoundError:
                    continue  # deleted since the scan
                except model_store.DamagedModelError as exc:
                    damage[name] = exc.reason
                except model_store.StoreError as exc:  # e.g. a storage error reading this model only
                    damage[name] = str(exc)
                except Exception as exc:  # anything else one model's files cause stays with that model
                    if self._damage.get(name, Damage("", 0)).error != repr(exc):
                        log.exception("refreshing model %s failed", name)
                    damage[name] = repr(exc)
            self._note_damage(damage)
            # A model whose folder vanished stops serving; a damaged one keeps what it had.
            for name in set(self._serving) - set(scan.models) - set(damage):
                del self._serving[name]
                self._aliases.pop(name, None)
                changed.append(name)
        return changed

    def _refresh_model(self, name: str) -> bool:
        """Serve the version the store names for `name`; whether the served version changed."""
        aliases = self.store.aliases(name)  # DamagedModelError when the alias file is not valid
        wanted = self.store.resolve(name)
        self._aliases[name] = aliases
        current = self._serving.get(name)
        if current is not None and current.version == wanted:
            return False
        failure = self._failures.get(name)
        if failure is not None and failure.version == wanted:
            return False  # already reported; retried when the store points elsewhere
        try:
            served = self._cache.pop((name, wanted), None) or self._load(name, wanted)
        except (model_store.StoreError, OSError) as exc:
            self._failures[name] = LoadFailure(version=wanted, error=str(exc), at=time.time())
            kept = f"still serving version {current.version}" if current else "nothing served"
            log.error("refusing %s version %s (%s): %s", name, wanted, kept, exc)
            return False
        self._failures.pop(name, None)
        self._serving[name] = served  # the swap: one reference assignment
        self.swaps += 1
        previous = f"from version {current.version}" if current else "first load"
        log.info("serving %s version %s (%s)", name, wanted, previous)
        return True

    def _note_damage(self, found: dict[str, str]) -> None:
        """Log each damaged model once per distinct problem, and once when it is repaired."""
        for name, error in found.items():
            known = self._damage.get(name)
            if known is None or known.error != error:
                served = self._serving.get(name)
                kept = f"still serving version {served.version}" if served else "nothing served"
                log.error("model %s is damaged (%s): %s", name, kept, error)
                self._damage[name] = Damage(error=error, at=time.time())
        for name in set(self._damage) - set(found):
            log.warning("model %s is no longer damaged (was: %s)", name, self._damage.pop(name).error)

    def resolve(self, name: str, version: int | str | None) -> ServedModel | int:
        """The loaded model for a request, or the version number that must be loaded first.

        `version` is None (the serving version), a number (or a string of digits), or an alias, which
        resolves as the last refresh read it (what this worker serves for that alias).
        """
        if version is None:
            served = self._serving.get(name)
            if served is not None:
                return served
            if name in self._failures:
                raise NotReadyError(f"model {name!r} has no loadable version: {self._failures[name].error}")
            if name in self._damage:
                raise NotReadyError(f"model {name!r} is damaged and serves nothing: {self._damage[name].error}")
            self.store.resolve(name)  # raises ModelNotFoundError (or the damage) with the right message
            raise NotReadyError(f"model {name!r} is not loaded yet")
        version = self.version_of(name, version)
        found = self.cached(name, version)
        if found is not None:
            return found
        return self.store.resolve(name, version)  # validates; the caller loads it off the loop

    def version_of(self, name: str, ref: int | str) -> int:
        """The version `ref` names: a number, digits, or an alias as the last refresh read it."""
        if isinstance(ref, int):
            return ref
        if model_store.is_version_text(ref):
            return model_store.check_version(int(ref))
        model_store.check_name(ref, "alias")
        known = self._aliases.get(name)
        if known is None:  # not refreshed yet, or damaged since start-up: the store says why
            return self.store.resolve(name, ref)
        if ref not in known:
            raise model_store.VersionNotFoundError(f"model {name!r} has no alias {ref!r}; it has {sorted(known)}")
        return known[ref]
