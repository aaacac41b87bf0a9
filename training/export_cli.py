"""`lstm-train export`: give a published version its ONNX and `.pt2` files, without changing its weights.

The checkpoint is loaded and verified against its sha256, its weights are put into the eager model, the
ONNX and `.pt2` files are exported from that and parity-checked against the TorchScript module, and the version's
manifest is rewritten atomically with their checksums (or why an export failed). Flags come from
ExportSettings' Fields, each with its LSTM_ environment twin, like lstm-train's own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pydantic import Field
from pydantic_settings import SettingsConfigDict

import model_store
from training.settings_cli import Switch, add_flags, flags_of, settings_from
from training.store_settings import StoreSettings, open_store

COMMAND_NAME = "export"


class ExportSettings(StoreSettings):
    """lstm-train export's options (LSTM_STORE_DIR, LSTM_MODEL as lstm-train's; LSTM_EXPORT_VERSION)."""

    model_config = SettingsConfigDict(env_prefix="LSTM_", extra="ignore")

    model: str = Field("lstm", description="model name")
    export_version: str | None = Field(
        None, description="the version to export: a number or an alias; unset: the serving version"
    )
    print_json: Switch = Field(
        False, validation_alias="LSTM_JSON", description="print the version's ONNX and .pt2 entries as one JSON object"
    )


FLAGS = flags_of(ExportSettings, {"store_dir": "store", "export_version": "version", "print_json": "json"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstm-train export",
        description="Add ONNX files (model.onnx, model_state.onnx) and torch.export programs (model.pt2, "
        "model_state.pt2) to a published version, exported from its checkpoint's weights, which stay as they are; "
        "LSTM_RUNTIME=auto then serves it with ONNX Runtime.",
    )
    add_flags(parser, ExportSettings, FLAGS)
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    settings = settings_from(ExportSettings, parser, parser.parse_args(argv), FLAGS)
    from training.export import OnnxParityError, export_version  # torch loads after the flags are checked

    try:
        store = open_store(settings)
    except ValueError as exc:
        print(f"lstm-train export: error: {exc}", file=sys.stderr)
        return 2
    except model_store.StoreError as exc:
        print(f"lstm-train export: error: {exc}", file=sys.stderr)
        return 1
    try:
        manifest = export_version(store, settings.model, settings.export_version)
    except (model_store.StoreError, OSError, ValueError, OnnxParityError) as exc:
        print(f"lstm-train export: error: {exc}", file=sys.stderr)
        return 1
    entry, pt2 = manifest.onnx, manifest.pt2
    assert entry is not None
    if settings.print_json:
        print(
            json.dumps(
                {
                    "model": manifest.name,
                    "version": manifest.version,
                    "onnx": entry.to_dict(),
                    "pt2": None if pt2 is None else pt2.to_dict(),
                }
            )
        )
    elif entry.error is None or entry.file is not None:
        files = ", ".join([*sorted(entry.checksums()), *sorted({} if pt2 is None else pt2.checksums())])
        print(f"exported {manifest.name} version {manifest.version} to {files} in {store.describe()}")
        print(f"  parity_max_abs_diff: {entry.parity_max_abs_diff:.3g} (ONNX)", end="")
        print("" if pt2 is None or pt2.file is None else f", {pt2.parity_max_abs_diff:.3g} (.pt2)")
    for failed in (entry, pt2):
        if failed is not None and failed.error is not None:
            print(f"lstm-train export: {failed.error} (recorded in the manifest)", file=sys.stderr)
    # ONNX is what serves; a failed .pt2 export alone is reported, not a failure of the command.
    return 0 if entry.file is not None else 1
