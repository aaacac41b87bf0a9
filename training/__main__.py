"""The lstm-train command: train a preset, register the version, print it and its metrics.

`lstm-train export` (add ONNX files to a published version) is training/export_cli.py.
`lstm-train import` (publish a model trained elsewhere) is training/import_cli.py.
"""

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
from pydantic import Field, create_model
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsConfigDict
from tqdm import tqdm

import model_store
from training import export_cli, import_cli
from training.config import BOUNDS, PRESETS, Bound, ParamError, PresetName, preset
from training.data import DatasetError, load_dataset
from training.memory import DEFAULT_BUDGET_MB, MemoryBudgetError, check_budget
from training.settings_cli import (
    Flag,
    Switch,
    add_flags,
    bounds_text,
    default_text,
    flags_of,
    number_text,
    settings_from,
)
from training.store_settings import StoreSettings, open_store
from training.train import Promote, TrainingError, TrainResult, run

# How torch reports an allocation that failed (under the job runner's memory limit, or a full machine).
OUT_OF_MEMORY = ("can't allocate memory", "Cannot allocate memory", "DefaultCPUAllocator")


class TrainSettings(StoreSettings):
    """lstm-train's own options; each is a flag (settings_cli) and an LSTM_ environment twin.

    The field names are the twins' (LSTM_STORE_DIR, as for lstm-serve; LSTM_TRAIN_TORCH_THREADS and
    LSTM_TRAIN_MEMORY_BUDGET_MB apart from lstm-serve's LSTM_TORCH_THREADS and LSTM_JOB_MEMORY_BUDGET_MB);
    FLAG_NAMES gives the flags that are named otherwise. The hyper-parameters are added from TrainConfig.
    """

    model_config = SettingsConfigDict(env_prefix="LSTM_", extra="ignore")

    preset: PresetName = Field("robust", description="the preset the hyper-parameters start from")
    model: str = Field("lstm", description="model name")
    promote: Promote = Field(
        "if_better",
        description="point the production alias at the new version: never, if_better (its worst-case held-out MSE "
        "is not worse than the serving version's, or nothing serves yet) or always",
    )
    report: Path | None = Field(None, description="also write the report picture here")
    print_json: Switch = Field(False, validation_alias="LSTM_JSON", description="print the result as one JSON object")
    no_progress: Switch = Field(False, description="hide the progress bar")
    no_pt2: Switch = Field(
        False,
        description="skip the torch.export .pt2 files (several seconds of each run; the manifest says they were "
        "skipped; ONNX and TorchScript are exported as always)",
    )
    progress_jsonl: Switch = Field(
        False,
        description="machine output for job runners: JSON lines on stdout (progress events, then a result or error)",
    )
    exit_with_parent: Switch = Field(
        False,
        description="exit at once if the parent process dies (job runners use it so no training outlives the service)",
    )
    dataset: Path | None = Field(
        None,
        description="train on your own data: an .npz with float arrays 'inputs' and 'targets' shaped (seq, batch, 1); "
        "the last fifth of the sequences is held out for its metrics",
    )
    train_torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch threads for training (not lstm-serve's LSTM_TORCH_THREADS); unset: the CPU budget's "
        "cores when they are idle at start, else 1 (docs/training.md, threads; changes float rounding, see README)",
    )
    train_memory_budget_mb: float = Field(
        DEFAULT_BUDGET_MB,
        ge=0,
        description="refuse to start when the run's estimated peak memory is over this many MiB (0: no check)",
    )


def _hyper_parameter(bound: Bound) -> tuple[Any, Any]:
    """A hyper-parameter as an lstm-train setting: unset keeps the preset's value; TrainConfig checks the bound."""
    kind: Any = bound.kind
    return kind | None, Field(None, description=bound.help)


HYPER_PARAMETERS: dict[str, Any] = {name: _hyper_parameter(bound) for name, bound in BOUNDS.items()}
# TrainSettings and one optional field per hyper-parameter (its flag --hidden-size, its twin LSTM_HIDDEN_SIZE).
COMMAND: type[TrainSettings] = create_model(
    "TrainCommandSettings",
    __base__=TrainSettings,
    **HYPER_PARAMETERS,
)
FLAG_NAMES = {
    "store_dir": "store",
    "print_json": "json",
    "train_torch_threads": "torch_threads",
    "train_memory_budget_mb": "memory_budget_mb",
}
FLAGS = flags_of(COMMAND, FLAG_NAMES)
BOOLEAN_FLAGS = tuple(flag.dest for flag in FLAGS if COMMAND.model_fields[flag.field].annotation is bool)


def twin(dest: str) -> str:
    """The environment variable that sets the flag stored in `dest`."""
    return next(flag.env for flag in FLAGS if flag.dest == dest)


def _help(flag: Flag, field: FieldInfo) -> str | None:
    """The hyper-parameters' help: meaning and bound (their default is the preset's); the rest: generated."""
    bound = BOUNDS.get(flag.field)
    return None if bound is None else f"{bound.help}; {bound.describe()} ({flag.env})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstm-train",
        description="Train an LSTM that reads sines and predicts cosines, and register it in the model store "
        "(`lstm-train export --help`: add ONNX files to a published version; `lstm-train import --help`: publish a "
        "model trained elsewhere). "
        "Every flag has an environment twin, listed in docs/training.md: --hidden-size is LSTM_HIDDEN_SIZE, "
        "--json is LSTM_JSON (true/false/1/0), --store is LSTM_STORE_DIR; a flag given overrides its twin.",
    )
    add_flags(parser, COMMAND, [flag for flag in FLAGS if flag.field not in BOUNDS])
    group = parser.add_argument_group("hyper-parameters (default: the preset's value)")
    add_flags(group, COMMAND, [flag for flag in FLAGS if flag.field in BOUNDS], help_for=_help)
    return parser


def flag_table() -> str:
    """docs/training.md's table of flags, generated from the Fields (tests/test_docs.py compares the two)."""
    lines = ["| flag | twin | default | meaning |", "| --- | --- | --- | --- |"]
    for flag in FLAGS:
        field = COMMAND.model_fields[flag.field]
        bound = BOUNDS.get(flag.field)
        if bound is None:
            default, meaning = (
                default_text(field),
                f"{field.description}{'; ' + bounds_text(field) if bounds_text(field) else ''}",
            )
        else:
            default = ", ".join(
                f"{name} {number_text(getattr(config, flag.field))}" for name, config in PRESETS.items()
            )
            meaning = f"{bound.help}; {bound.describe()}"
        lines.append(f"| `{flag.option}` | `{flag.env}` | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


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
    """The flags, each unset one taken from its environment twin (by pydantic-settings); exit 2 on a bad value."""
    parser = build_parser()
    settings = settings_from(COMMAND, parser, parser.parse_args(argv), FLAGS)
    return argparse.Namespace(**{flag.dest: getattr(settings, flag.field) for flag in FLAGS})


def settings_of(args: argparse.Namespace) -> StoreSettings:
    """The store's settings among the parsed flags (already checked by parse_args): every StoreSettings field
    that is a flag, so a store setting added there reaches lstm-train without a line here."""
    fields = {flag.field: getattr(args, flag.dest) for flag in FLAGS if flag.field in StoreSettings.model_fields}
    return StoreSettings(**fields)


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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [export_cli.COMMAND_NAME]:
        return export_cli.main(argv[1:])
    if argv[:1] == [import_cli.COMMAND_NAME]:
        return import_cli.main(argv[1:])
    args = parse_args(argv)
    machine = args.progress_jsonl
    if args.exit_with_parent:
        exit_with_parent()

    def fail(message: str, status: int) -> int:
        if machine:
            JsonLines.emit("error", message=message)
        print(f"lstm-train: error: {message}", file=sys.stderr)
        return status

    overrides = {name: getattr(args, name) for name in BOUNDS if getattr(args, name) is not None}
    try:
        config = preset(args.preset).with_overrides(overrides)
        model_store.check_name(args.model)
        dataset = None if args.dataset is None else load_dataset(args.dataset)
        check_budget(config, args.memory_budget_mb, None if dataset is None else dataset.shape)
    except (ParamError, model_store.InvalidNameError, DatasetError, MemoryBudgetError) as exc:
        return fail(str(exc), 2)
    apply_torch_threads(args)
    try:
        store = open_store(settings_of(args))
    except ValueError as exc:
        return fail(str(exc), 2)
    except model_store.StoreError as exc:
        return fail(str(exc), 1)
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
            export_pt2=not args.no_pt2,
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
        args.report.write_bytes(store.read_version_file(args.model, result.manifest.version, "report.png"))
    if machine:
        JsonLines.emit("result", **summary, metrics=result.manifest.metrics)
    elif args.json:
        print(json.dumps(summary))
    else:
        print(f"registered {summary['model']} version {summary['version']} in {store.describe()}")
        for key, value in summary.items():
            if key not in ("model", "version"):
                print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
