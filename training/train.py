"""The training run: a flat loop, evaluation, TorchScript export with a parity check, and publishing.

run(config, store) trains, scores on the held-out suite, scripts the model, checks the scripted
module against the eager one, exports the ONNX and `.pt2` files (optional: a failure is recorded in the manifest),
renders the report, then saves one new version (and promotes it if asked). Nothing reaches the store
unless every required step before succeeded.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

import model_store
from training.config import TrainConfig
from training.data import Dataset, random_sines, tutorial_data
from training.evaluate import WARMUP, evaluate
from training.export import onnx_files, pt2_files, skipped_pt2
from training.model import STATE_METHOD, LSTMRegressor, ModelConfig
from training.report import render

Promote = Literal["never", "if_better", "always"]
PROMOTE_CHOICES: tuple[Promote, ...] = ("never", "if_better", "always")
# The metric that decides `if_better` (lower is better): the suite's worst case, or with the
# user's own data, the MSE on its held-out part.
SUITE_METRIC = "worst_mse"
DATASET_METRIC = "dataset_test_mse"
PARITY_TOLERANCE = 1e-6
PARITY_SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (7, 3), (64, 5), (500, 2))
# Chunked (forward_state chained) against one-shot (forward): float sums in another order, so a looser bound.
SEQUENCE_PARITY_TOLERANCE = 1e-5
SEQUENCE_PARITY_LENGTHS: tuple[int, ...] = (1, 2, 17, 100, 400)
SEQUENCE_PARITY_CHUNKINGS = 4  # random chunkings per length, besides chunks of 1 and the whole

ProgressCallback = Callable[[int, int, float], None]  # (epoch, max_epochs, loss)
Model = Callable[[torch.Tensor], torch.Tensor]


class TrainingError(RuntimeError):
    """Training could not produce a version worth registering (diverged, parity failed, ...)."""


@dataclass
class TrainResult:
    """What a run produced: the published manifest and how it got there."""

    manifest: model_store.Manifest
    epochs: int
    final_loss: float
    seconds: float
    promoted: bool
    promotion_reason: str
    losses: list[float] = field(repr=False, default_factory=list)


def _seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _lr_at(config: TrainConfig, epoch: int) -> float:
    """Cosine decay from lr to lr_min over max_epochs (flat when they are equal)."""
    progress = epoch / max(1, config.max_epochs)
    return config.lr_min + (config.lr - config.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))


def fit(
    model: nn.Module,
    config: TrainConfig,
    generator: torch.Generator,
    on_epoch: ProgressCallback | None = None,
    dataset: Dataset | None = None,
) -> list[float]:
    """Train `model` in place; returns the loss of every epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    tutorial = tutorial_data()
    losses: list[float] = []
    started = time.monotonic()
    model.train()
    for epoch in range(config.max_epochs):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(config, epoch)
        if dataset is not None:
            # The user's data, full batch like the tutorial; every sample counts (targets may be anything).
            loss = nn.functional.mse_loss(model(dataset.train_x), dataset.train_y)
        elif config.preset == "tutorial":
            # The tutorial's full batch: (20, 5, 1), every sample counted.
            loss = nn.functional.mse_loss(model(tutorial.train_x), tutorial.train_y)
        else:
            x, y = random_sines(config.batch_size, config.seq_len, config.step_min, config.step_max, generator)
            loss = nn.functional.mse_loss(model(x)[WARMUP:], y[WARMUP:])  # (seq - 3, batch, 1)
            if config.short_batch_size and config.short_weight:
                # Short sequences weigh the first samples after warm-up, which long ones dilute.
                xs, ys = random_sines(
                    config.short_batch_size, config.short_seq_len, config.step_min, config.step_max, generator
                )
                loss = loss + config.short_weight * nn.functional.mse_loss(model(xs)[WARMUP:], ys[WARMUP:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(f"training diverged at epoch {epoch + 1} (loss {value}); try a lower lr")
        losses.append(value)
        if on_epoch is not None:
            on_epoch(epoch + 1, config.max_epochs, value)
        if value < config.target_loss:
            break
        if time.monotonic() - started > config.time_limit:
            break
    model.eval()
    return losses


@torch.inference_mode()
def check_parity(eager: nn.Module, scripted: model_store.ScriptModule, input_size: int, seed: int) -> float:
    """Largest |eager - scripted| over random inputs of several shapes; raises above tolerance."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for seq, batch in PARITY_SHAPES:
        x = torch.randn(seq, batch, input_size, generator=generator)  # (seq, batch, input)
        worst = max(worst, float((eager(x) - scripted(x)).abs().max()))
    if worst > PARITY_TOLERANCE:
        raise TrainingError(f"scripted model differs from eager by {worst:.3g} > {PARITY_TOLERANCE:g}")
    return worst


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread: the same float reductions in the same order, so the parity check is reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _chunkings(length: int, rng: random.Random) -> list[list[int]]:
    """Ways to cut `length` samples into chunks: all ones, the whole, and random cuts."""
    found = [[1] * length, [length]]
    for _ in range(SEQUENCE_PARITY_CHUNKINGS):
        cuts = sorted(rng.sample(range(1, length), min(length - 1, rng.randint(1, 8)))) if length > 1 else []
        bounds = [0, *cuts, length]
        found.append([b - a for a, b in zip(bounds, bounds[1:], strict=False)])
    return found


@torch.inference_mode()
def check_sequence_parity(
    scripted: model_store.ScriptModule, model_config: ModelConfig, seed: int, batch: int = 2
) -> float:
    """Largest |chunked - one-shot| of the export over random lengths and chunkings (chunks of 1 among them):
    the outputs of `forward_state` chained over the chunks, concatenated, against `forward` of the whole.
    Raises TrainingError above SEQUENCE_PARITY_TOLERANCE."""
    if not model_store.has_method(scripted, STATE_METHOD):
        raise TrainingError(f"the scripted model has no {STATE_METHOD} method")
    step = getattr(scripted, STATE_METHOD)
    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    state_shape = (model_config.num_layers, batch, model_config.hidden_size)
    worst = 0.0
    with _one_thread():
        for length in SEQUENCE_PARITY_LENGTHS:
            x = torch.randn(length, batch, model_config.input_size, generator=generator)  # (seq, batch, input)
            whole = scripted(x)  # (seq, batch, output)
            for chunks in _chunkings(length, rng):
                h = torch.zeros(state_shape)  # (num_layers, batch, hidden)
                c = torch.zeros(state_shape)
                outputs = []
                start = 0
                for size in chunks:
                    y, h, c = step(x[start : start + size], h, c)  # y (size, batch, output)
                    outputs.append(y)
                    start += size
                worst = max(worst, float((torch.cat(outputs) - whole).abs().max()))
    if not worst <= SEQUENCE_PARITY_TOLERANCE:  # `not <=`: a NaN fails too
        raise TrainingError(
            f"chunked outputs of {STATE_METHOD} differ from the one-shot forward by {worst:.3g} > "
            f"{SEQUENCE_PARITY_TOLERANCE:g}"
        )
    return worst


def sequence_support(
    scripted: model_store.ScriptModule, model_config: ModelConfig, seed: int
) -> model_store.SequenceSupport:
    """The manifest's `sequence` entry of an export, after its chunked parity check."""
    parity = check_sequence_parity(scripted, model_config, seed)
    return model_store.SequenceSupport(
        method=STATE_METHOD,
        num_layers=model_config.num_layers,
        hidden_size=model_config.hidden_size,
        parity_max_abs_diff=parity,
    )


@torch.inference_mode()
def score(model: Model, dataset: Dataset | None) -> tuple[str, float]:
    """The selection metric of `model` (lower is better) and its name."""
    if dataset is None:
        return SUITE_METRIC, float(evaluate(model)[SUITE_METRIC])
    return DATASET_METRIC, float(((model(dataset.test_x) - dataset.test_y) ** 2).mean())


def _servable(store: model_store.Store, name: str, version: int) -> Model:
    """A published version as a Model: its TorchScript module, or an imported ONNX model's file in ONNX Runtime."""
    manifest = store.manifest(name, version)
    if manifest.has_checkpoint or manifest.onnx is None or manifest.onnx.file is None:
        return store.load(name, version).module
    data = store.read_checked(name, version, manifest.onnx.file, manifest.onnx.sha256 or "")
    session = model_store.onnx_runtime.OnnxSession(data)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(x.to(torch.float32).numpy())[0])  # (seq, batch, 1) float32

    return forward


def decide_promotion(
    store: model_store.Store, name: str, candidate: Model, dataset: Dataset | None, policy: Promote
) -> tuple[bool, str]:
    """Whether to promote `candidate`, and the numbers that decided it.

    `if_better` scores the serving version afresh on the same data as the candidate (the suite, or
    the held-out part of the user's dataset), so the two numbers are always comparable.
    """
    if policy == "never":
        return False, "promotion not requested"
    if policy == "always":
        return True, "promotion requested unconditionally"
    try:
        current = store.resolve(name)
    except model_store.ModelNotFoundError:
        return True, "no serving version yet"
    try:
        incumbent = _servable(store, name, current)
    except model_store.StoreError as exc:
        return True, f"serving version {current} cannot be loaded ({exc})"
    metric, new = score(candidate, dataset)
    _, old = score(incumbent, dataset)
    better = new <= old
    verdict = "not worse than" if better else "worse than"
    return better, f"{metric} {new:.3g} is {verdict} serving version {current}'s {old:.3g} on the same data"


def describe_data(config: TrainConfig, dataset: Dataset | None) -> dict[str, Any]:
    """What the model was trained on, for the manifest."""
    if dataset is not None:
        return dataset.describe()
    if config.preset == "tutorial":
        return {"kind": "tutorial", "points": 200, "span": "[0, 12π]", "split": "first half trains, second tests"}
    return {
        "kind": "random_sines",
        "step": f"log-uniform on [{config.step_min:g}, {config.step_max:g}] rad",
        "phase": "uniform on [0, 2π)",
        "lengths": [config.short_seq_len, config.seq_len],
        "fresh_batch_every_epoch": True,
    }


def run(
    config: TrainConfig,
    store: model_store.Store,
    name: str = "lstm",
    promote: Promote = "never",
    on_epoch: ProgressCallback | None = None,
    dataset: Dataset | None = None,
    export_pt2: bool = True,
) -> TrainResult:
    """Train, evaluate, export, check and publish one version of `name` (on `dataset` if given). `export_pt2`
    False skips the `.pt2` files (several seconds per run; the manifest's `pt2` entry says it was skipped)."""
    model_store.check_name(name)
    started = time.monotonic()
    generator = _seed_everything(config.seed)
    model_config = ModelConfig(hidden_size=config.hidden_size, num_layers=config.num_layers)
    model = LSTMRegressor(model_config)
    losses = fit(model, config, generator, on_epoch, dataset)
    metrics = evaluate(model)
    if dataset is not None:
        metrics[DATASET_METRIC] = score(model, dataset)[1]
    scripted = model_store.script(model)
    parity = check_parity(model, scripted, model_config.input_size, config.seed)
    sequence = sequence_support(scripted, model_config, config.seed)
    onnx, onnx_bytes = onnx_files(model, model_config, config.seed, references=(scripted,))
    pt2, pt2_bytes = pt2_files(model, model_config, config.seed, (scripted,)) if export_pt2 else (skipped_pt2(), {})
    seconds = time.monotonic() - started
    metrics.update(
        epochs=len(losses), final_loss=losses[-1], train_seconds=round(seconds, 2), parity_max_abs_diff=parity
    )
    report = render(scripted, losses, f"{name} ({config.preset}, seed {config.seed})")
    promoted, reason = decide_promotion(store, name, scripted, dataset, promote)
    manifest = store.save(
        name,
        scripted,
        inputs=(model_store.sequence_spec("input", model_config.input_size),),
        outputs=(model_store.sequence_spec("output", model_config.output_size),),
        # The thread count changes float rounding: with it the run can be reproduced (README, determinism).
        params=config.to_dict() | {"model": model_config.to_dict(), "torch_threads": torch.get_num_threads()},
        metrics=metrics,
        data=describe_data(config, dataset),
        extra_files={"report.png": report, **onnx_bytes, **pt2_bytes},
        sequence=sequence,
        onnx=onnx,
        pt2=pt2,
    )
    if promoted:
        store.set_alias(name, model_store.PRODUCTION, manifest.version)
    return TrainResult(
        manifest=manifest,
        epochs=len(losses),
        final_loss=losses[-1],
        seconds=seconds,
        promoted=promoted,
        promotion_reason=reason,
        losses=losses,
    )
