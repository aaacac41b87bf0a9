"""The lstm-train command: train a preset, register the version, print it and its metrics."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import model_store
from training.config import BOUNDS, PRESET_NAMES, ParamError, preset
from training.data import DatasetError, load_dataset
from training.memory import DEFAULT_BUDGET_MB, MemoryBudgetError, check_budget
from training.train import PROMOTE_CHOICES, TrainingError, TrainResult, run

DEFAULT_STORE = "model-store"
# Each flag's environment twin where it is not LSTM_<DEST>: --store is LSTM_STORE_DIR, as for lstm-serve;
# the thread count and the memory budget are the trainer's own, apart from lstm-serve's LSTM_TORCH_THREADS
# and LSTM_JOB_MEMORY_BUDGET_MB.
TWIN_NAMES = {
    "store": "LSTM_STORE_DIR",
    "torch_threads": "LSTM_TRAIN_TORCH_THREADS",
    "memory_budget_mb": "LSTM_TRAIN_MEMORY_BUDGET_MB",
}
BOOLEAN_FLAGS = ("json", "no_progress", "progress_jsonl", "exit_with_parent")
TRUE, FALSE = ("true", "1"), ("false", "0")
# How torch reports an allocation that failed (under the job runner's memory limit, or a full machine).
OUT_OF_MEMORY = ("can't allocate memory", "Cannot allocate memory", "DefaultCPUAllocator")


def twin(dest: str) -> str:
    """The environment variable that sets the flag stored in `dest`."""
    return TWIN_NAMES.get(dest, f"LSTM_{dest.upper()}")


def _env(name: str, default: str | None = None) -> str | None:
    """The value of the environment twin of the flag stored in `name`."""
    return os.environ.get(twin(name), default)


class UsageError(ValueError):
    """An environment twin with a value its flag would not accept."""


def _env_flag(name: str) -> bool:
    """A boolean flag's twin: true/1 or false/0 (any case); unset is false."""
    value = _env(name)
    if value is None:
        return False
    if value.strip().lower() in TRUE:
        return True
    if value.strip().lower() in FALSE:
        return False
    raise UsageError(f"{twin(name)}={value!r}: expected true, false, 1 or 0")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstm-train",
        description="Train an LSTM that reads sines and predicts cosines, and register it in the model store. "
        "Every flag has an environment twin, listed in docs/training.md: --hidden-size is LSTM_HIDDEN_SIZE, "
        "--json is LSTM_JSON (true/false/1/0), --store is LSTM_STORE_DIR; a flag given overrides its twin.",
    )
    parser.add_argument("--preset", choices=PRESET_NAMES, default=_env("preset", "robust"), help="default: robust")
    parser.add_argument("--store", default=_env("store_dir", DEFAULT_STORE), help="store folder (default: %(default)s)")
    parser.add_argument("--model", default=_env("model", "lstm"), help="model name (default: %(default)s)")
    parser.add_argument(
        "--promote",
        choices=PROMOTE_CHOICES,
        default=_env("promote", "if_better"),
        help="point the production alias at the new version: never, if_better (its worst-case held-out MSE "
        "is not worse than the serving version's, or nothing serves yet) or always (default: %(default)s)",
    )
    parser.add_argument("--report", type=Path, default=_env("report"), help="also write the report picture here")
    parser.add_argument("--json", action="store_true", default=None, help="print the result as one JSON object")
    parser.add_argument("--no-progress", action="store_true", default=None, help="hide the progress bar")
    parser.add_argument(
        "--progress-jsonl",
        action="store_true",
        default=None,
        help="machine output for job runners: JSON lines on stdout (progress events, then a result or error)",
    )
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        default=None,
        help="exit at once if the parent process dies (job runners use it so no training outlives the service)",
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=_env("dataset"),
        help="train on your own data: an .npz with float arrays 'inputs' and 'targets' shaped (seq, batch, 1); "
        "the last fifth of the sequences is held out for its metrics",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=_env("torch_threads"),
        help="torch threads for training (default: the CPU budget's cores when they are idle at start, else 1; "
        "see docs/training.md; changes float rounding, see README)",
    )
    parser.add_argument(
        "--memory-budget-mb",
        type=float,
        default=_env("memory_budget_mb", str(DEFAULT_BUDGET_MB)),
        help="refuse to start when the run's estimated peak memory is over this many MiB (0: no check; "
        "default: %(default)s)",
    )
    group = parser.add_argument_group("hyper-parameters (default: the preset's value)")
    for name, bound in BOUNDS.items():
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=bound.kind,
            default=_env(name),
            metavar=bound.kind.__name__.upper(),
            help=f"{bound.help}; {bound.describe()}",
        )
    return parser


def summarize(result: TrainResult) -> dict[str, Any]:
    manifest = result.manifest
    metrics = manifest.metrics
    return {
        "model": manifest.name,
        "version": manifest.version,
        "preset": manifest.params["preset"],
        "epochs": result.epochs,
        "final_loss": result.final_loss,
        "seconds": round(result.seconds, 1),
        "worst_mse": metrics["worst_mse"],
        "worst_case": metrics["worst_case"],
        "tutorial_test_mse": metrics["tutorial_test_mse"],
        "promoted": result.promoted,
        "promotion_reason": result.promotion_reason,
        "sha256": manifest.sha256,
    }


def exit_with_parent() -> None:
    """Watch the parent from a daemon thread; when it is gone, leave without registering anything."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class JsonLines:
    """Progress as JSON lines for a job runner: at most one progress line per `interval` seconds."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.last = 0.0

    @staticmethod
    def emit(event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, **fields}), flush=True)

    def __call__(self, epoch: int, max_epochs: int, loss: float) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval or epoch == max_epochs:
            self.last = now
            self.emit("progress", epoch=epoch, max_epochs=max_epochs, loss=loss)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags, each unset one taken from its environment twin."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for name in BOOLEAN_FLAGS:
            if getattr(args, name) is None:
                setattr(args, name, _env_flag(name))
    except UsageError as exc:
        parser.error(str(exc))
    return args


def memory_limit() -> str:
    """This process's data-size limit, as the job runner sets it, for an out-of-memory message."""
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    return "no limit set" if soft == resource.RLIM_INFINITY else f"limit {soft >> 20} MiB"


def out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(sign in str(exc) for sign in OUT_OF_MEMORY)
    )


def apply_torch_threads(args: argparse.Namespace) -> int:
    """Set torch's thread count from --torch-threads, else from the CPU budget and how busy it is now.

    The default is the budget's whole cores when they are idle at start and one thread when they are
    not (model_store.training_threads; docs/training.md, threads). A count over the budget warns.
    """
    budget = model_store.cpu_budget()
    if args.torch_threads is None:
        threads = model_store.training_threads(budget, model_store.idle_cores())
    else:
        threads = max(1, int(args.torch_threads))
    if threads > budget.threads:
        print(
            f"lstm-train: warning: {threads} torch threads but this process may use {budget.describe()}; "
            "the extra threads wait for cores they do not get (docs/training.md, threads)",
            file=sys.stderr,
        )
    torch.set_num_threads(threads)
    return threads


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = args.progress_jsonl
    if args.exit_with_parent:
        exit_with_parent()

    def fail(message: str, status: int) -> int:
        if machine:
            JsonLines.emit("error", message=message)
        print(f"lstm-train: error: {message}", file=sys.stderr)
        return status

    overrides = {
        name: bound.kind(getattr(args, name)) for name, bound in BOUNDS.items() if getattr(args, name) is not None
    }
    try:
        config = preset(args.preset).with_overrides(overrides)
        model_store.check_name(args.model)
        dataset = None if args.dataset is None else load_dataset(args.dataset)
        check_budget(config, args.memory_budget_mb, None if dataset is None else dataset.shape)
    except (ParamError, model_store.InvalidNameError, DatasetError, MemoryBudgetError) as exc:
        return fail(str(exc), 2)
    apply_torch_threads(args)
    store = model_store.ModelStore(args.store)
    bar = tqdm(
        total=config.max_epochs,
        unit="epoch",
        disable=args.no_progress or machine,
        mininterval=0.5,
        dynamic_ncols=True,
    )

    def on_tqdm(epoch: int, max_epochs: int, loss: float) -> None:
        bar.update(epoch - bar.n)
        bar.set_postfix(loss=f"{loss:.2e}", refresh=False)

    try:
        result = run(
            config,
            store,
            name=args.model,
            promote=args.promote,
            on_epoch=JsonLines() if machine else on_tqdm,
            dataset=dataset,
        )
    except (TrainingError, model_store.StoreError, OSError) as exc:
        bar.close()
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        bar.close()
        return fail("interrupted; nothing was registered", 130)
    except Exception as exc:  # the traceback goes to stderr (a job's train.log); the message stays one line
        bar.close()
        traceback.print_exc()
        if out_of_memory(exc):
            return fail(f"training ran out of memory ({memory_limit()}); nothing was registered", 1)
        return fail(f"training failed with an unexpected {type(exc).__name__}; nothing was registered", 1)
    bar.close()
    summary = summarize(result)
    if args.report is not None:
        args.report.write_bytes(store.version_file(args.model, result.manifest.version, "report.png").read_bytes())
    if machine:
        JsonLines.emit("result", **summary, metrics=result.manifest.metrics)
    elif args.json:
        print(json.dumps(summary))
    else:
        print(f"registered {summary['model']} version {summary['version']} in {store.root}")
        for key, value in summary.items():
            if key not in ("model", "version"):
                print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
