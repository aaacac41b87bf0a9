"""`lstm-train import FILE`: check a TorchScript or ONNX file trained elsewhere and publish it as a new version.

The checks (model_store.imported) and the held-out metrics (training.importing) run before anything is written;
the version is saved whole or not at all. Flags come from ImportSettings' Fields, each with its LSTM_ environment
twin, like lstm-train's own. Exit status: 0 published, 3 a check failed (the message and `--json` name it), 1 any
other failure (the store), 2 a usage error. lstm-serve's POST /models/{name}/versions runs this command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

import model_store
from training.settings_cli import Switch, add_flags, flags_of, settings_from
from training.store_settings import StoreSettings, open_store

DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # lstm-serve's LSTM_IMPORT_MAX_BYTES default too

COMMAND_NAME = "import"
CHECK_FAILED = 3
PromoteChoice = Literal["never", "if_better", "always"]


class ImportSettings(StoreSettings):
    """lstm-train import's options (LSTM_STORE_DIR, LSTM_MODEL as lstm-train's; LSTM_IMPORT_*)."""

    model_config = SettingsConfigDict(env_prefix="LSTM_", extra="ignore")

    model: str = Field("lstm", description="model name")
    import_format: Literal["auto", "torchscript", "onnx"] = Field(
        "auto", description="the file's format; auto: a zip archive is TorchScript, anything else ONNX"
    )
    import_promote: PromoteChoice = Field(
        "never",
        description="point the production alias at the new version: never, if_better (its worst-case held-out MSE "
        "is not worse than the serving version's, or nothing serves yet) or always",
    )
    import_source: str = Field(
        "", max_length=500, description="where the file came from, for the manifest (empty: the file's name)"
    )
    import_max_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=1024,
        le=1 << 30,
        description="largest file accepted (the size check fails above; the same variable as lstm-serve's)",
    )
    print_json: Switch = Field(False, validation_alias="LSTM_JSON", description="print the result as one JSON object")


FLAGS = flags_of(
    ImportSettings,
    {
        "store_dir": "store",
        "import_format": "format",
        "import_promote": "promote",
        "import_source": "source",
        "import_max_bytes": "max_bytes",
        "print_json": "json",
    },
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstm-train import",
        description="Check a model trained elsewhere (a TorchScript archive or an ONNX file taking and giving "
        "(seq, batch, 1) float32; the format is told from the bytes) and publish it as a new version with held-out "
        "metrics; never unpickled. An ONNX file is served by ONNX Runtime (it has no TorchScript checkpoint).",
    )
    parser.add_argument("file", type=Path, help="the TorchScript archive (or ONNX file)")
    add_flags(parser, ImportSettings, FLAGS)
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from(ImportSettings, parser, args, FLAGS)
    from model_store.imported import ImportCheckError  # torch loads after the flags are checked
    from training.importing import import_model

    def report(payload: dict[str, object], status: int) -> int:
        if settings.print_json:
            print(json.dumps(payload))
        elif "error" in payload:
            print(f"lstm-train import: error: {payload['error']}", file=sys.stderr)
        return status

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        return report({"error": f"cannot read {args.file}: {exc.strerror}"}, 1)
    fmt = None if settings.import_format == "auto" else settings.import_format
    source = settings.import_source or str(args.file.name)
    try:
        store = open_store(settings)
    except ValueError as exc:
        return report({"error": str(exc)}, 2)
    except model_store.StoreError as exc:
        return report({"error": str(exc)}, 1)
    try:
        result = import_model(
            store, settings.model, data, fmt, source, settings.import_promote, settings.import_max_bytes
        )
    except ImportCheckError as exc:
        return report({"error": str(exc), "check": exc.check}, CHECK_FAILED)
    except model_store.InvalidNameError as exc:
        return report({"error": str(exc), "check": "name"}, CHECK_FAILED)
    except (model_store.StoreError, OSError) as exc:
        return report({"error": str(exc)}, 1)
    manifest = result.manifest
    if settings.print_json:
        print(
            json.dumps(
                {
                    "model": manifest.name,
                    "version": manifest.version,
                    "promoted": result.promoted,
                    "promotion_reason": result.promotion_reason,
                    "manifest": manifest.to_dict(),
                }
            )
        )
    else:
        print(f"imported {args.file} as {manifest.name} version {manifest.version} in {store.describe()}")
        print(
            f"  worst_mse: {manifest.metrics['worst_mse']:.3g}  promoted: {result.promoted} ({result.promotion_reason})"
        )
    return 0
