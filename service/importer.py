"""Bring your own model over HTTP: a model file checked and published by an `lstm-train import` child process.

The checks need torch.jit's restricted loader or ONNX Runtime, and the held-out metrics need training/evaluate.py,
which the service may not import; so, like a training job, the work runs in its own `python -m training import`
process (at the training jobs' niceness and memory cap, killed with its parent). The service writes the body to a
private temporary file, waits for the child and reads its one JSON line: a failed check is an InvalidInputError
(422) naming it; the child saves through the store's atomic save, so a failure leaves nothing half-registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import model_store
from service.config import Settings
from service.errors import InvalidInputError, PayloadTooLargeError
from service.job_runner import STDOUT_LINE_LIMIT, child_environment, child_setup, one_line

ImportFormat = Literal["auto", "torchscript", "onnx"]
Promote = Literal["never", "if_better", "always"]
CHECK_FAILED = 3  # lstm-train import's exit status for a failed check (training/import_cli.py)
# Content-Type -> format; anything else (application/octet-stream, none) is detected from the bytes.
FORMAT_BY_MEDIA: dict[str, ImportFormat] = {
    "application/zip": "torchscript",
    "application/vnd.pytorch.torchscript": "torchscript",
    "application/onnx": "onnx",
}


def format_of(media: str, query: ImportFormat | None) -> ImportFormat:
    """The query's `format` if given, else the Content-Type's, else auto."""
    if query is not None:
        return query
    return FORMAT_BY_MEDIA.get(media.split(";", 1)[0].strip().lower(), "auto")


def import_command(
    settings: Settings, path: Path, name: str, fmt: ImportFormat, promote: Promote, source: str
) -> list[str]:
    """The lstm-train import invocation (flags only: the child's environment holds no LSTM_ settings)."""
    return [
        "nice", "-n", str(settings.job_nice),
        sys.executable, "-m", "training", "import", str(path),
        *settings.store_flags(),
        "--model", name,
        "--format", fmt,
        "--promote", promote,
        "--source", source,
        "--max-bytes", str(settings.import_max_bytes),
        "--json",
    ]  # fmt: skip


async def run_import(
    settings: Settings, name: str, data: bytes, fmt: ImportFormat, promote: Promote, source: str
) -> dict[str, Any]:
    """Check and publish `data` as a new version of `name`; lstm-train import's result (model, version, promoted,
    manifest). PayloadTooLargeError over import_max_bytes, InvalidInputError for a failed check."""
    model_store.check_name(name)
    if len(data) > settings.import_max_bytes:
        raise PayloadTooLargeError(
            f"the model file has {len(data)} bytes, more than LSTM_IMPORT_MAX_BYTES={settings.import_max_bytes}"
        )
    with tempfile.TemporaryDirectory(prefix="lstm-import-") as folder:
        path = Path(folder) / "model"
        path.write_bytes(data)
        process = await asyncio.create_subprocess_exec(
            *import_command(settings, path, name, fmt, promote, source[:500]),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_environment(),
            limit=STDOUT_LINE_LIMIT,
            preexec_fn=lambda: child_setup(settings.job_memory_limit),
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), settings.import_time_limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise model_store.StorageError(
                f"the import's checks took longer than LSTM_IMPORT_TIME_LIMIT={settings.import_time_limit:g} s; "
                "nothing was registered"
            ) from None
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    if process.returncode == 0 and "version" in result:
        return result
    if process.returncode == CHECK_FAILED and "error" in result:
        raise InvalidInputError(f"{result['error']}; nothing was registered")
    tail = one_line(stderr.decode(errors="replace")[-500:])
    raise model_store.StorageError(
        f"the import failed ({result.get('error') or tail or f'exit status {process.returncode}'}); "
        "nothing was registered"
    )
