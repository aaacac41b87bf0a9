"""The `lstm` command: predict, models, promote, register, train (and follow), jobs, cancel, against a service."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import httpx
import numpy as np

from lstm_client.client import Client
from lstm_client.errors import ClientError, JobFailedError, ServerError
from lstm_client.progress import Progress

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_OK = 0
EXIT_JOB_FAILED = 1  # a followed training job ended failed or cancelled
EXIT_USAGE = 2  # bad arguments or input values (argparse uses 2 too)
EXIT_REFUSED = 4  # the service refused the request (a 4xx)
EXIT_SERVER = 5  # the service failed (a 5xx) or could not be reached
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

EPILOG = f"""\
exit codes:
  {EXIT_OK}  success
  {EXIT_JOB_FAILED}  a followed training job failed or was cancelled (train --follow)
  {EXIT_USAGE}  usage error: bad arguments or input values
  {EXIT_REFUSED}  the service refused the request (4xx: bad input, unknown model or job, no permission, queue full)
  {EXIT_SERVER}  the service failed (5xx) or could not be reached
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); a followed job goes on running on the server

environment: LSTM_URL (default {DEFAULT_URL}), LSTM_API_TOKEN.
"""
NUMBER_SEPARATORS = re.compile(r"[\s,]+")


class UsageError(Exception):
    """Bad input values: exit 2 with the message."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstm",
        description="Command-line client of lstm-service: ask it for cosines, manage versions, train.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default=os.environ.get("LSTM_URL", DEFAULT_URL), help="service URL (env LSTM_URL)")
    parser.add_argument(
        "--token", default=os.environ.get("LSTM_API_TOKEN"), help="bearer token for management (env LSTM_API_TOKEN)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of text")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request (default 30)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="cosines for sine values",
        description="Cosines for one sine sequence: values from the arguments, --file, or standard input "
        "(numbers separated by spaces, commas or newlines; or a JSON array shaped (seq, batch, 1)). "
        "The first three outputs of a sequence are unreliable by nature (see the README).",
    )
    predict.add_argument("values", nargs="*", type=str, help="sine values, e.g. 0 0.0998 0.1987")
    predict.add_argument("--file", "-f", help="read values from this file ('-' for standard input)")
    predict.add_argument("--model", default="lstm", help="model name (default lstm)")
    predict.add_argument("--version", type=int, help="version (default: the serving one)")
    predict.add_argument("--binary", action="store_true", help="send OIP binary tensors instead of JSON")

    commands.add_parser("models", help="every model and version with metrics and aliases")

    promote = commands.add_parser("promote", help="point an alias (production) at a version: promote or roll back")
    promote.add_argument("model")
    promote.add_argument("version", type=int)
    promote.add_argument("--alias", default="production", help="alias to move (default production)")

    register = commands.add_parser(
        "register",
        help="publish a model trained elsewhere (TorchScript or ONNX file) as a new version",
        description="Send a model file (a TorchScript archive or an ONNX file taking and giving (seq, batch, 1) "
        "float32; the server tells which from its bytes) to POST /models/{name}/versions. The server checks it "
        "(loads, shapes, finite outputs, size), scores it on the held-out suite and publishes it; a failed check "
        "exits 4 naming it. The checks take several seconds: --timeout applies to the whole upload.",
    )
    register.add_argument("file", help="the model file")
    register.add_argument("--model", required=True, help="model name to register it under")
    register.add_argument(
        "--promote", metavar="ALIAS", help="then point ALIAS (e.g. production) at the new version, as lstm promote"
    )
    register.add_argument("--format", choices=["auto", "torchscript", "onnx"], default="auto", help="default auto")
    register.add_argument("--source", default="", help="where the file came from, for the manifest (default: its name)")

    train = commands.add_parser("train", help="queue a training job (and follow it)")
    train.add_argument("--model", default="lstm", help="model name (default lstm)")
    train.add_argument("--preset", choices=["robust", "tutorial"], default="robust", help="starting hyper-parameters")
    train.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="hyper-parameter override, repeatable (e.g. --param max_epochs=200); see lstm-train --help",
    )
    train.add_argument("--promote", choices=["never", "if_better", "always"], default="if_better")
    train.add_argument("--follow", action="store_true", help="show progress until the job finishes")

    jobs = commands.add_parser("jobs", help="training jobs, newest first")
    jobs.add_argument("--limit", type=int, default=20, help="jobs to show (default 20)")

    cancel = commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("id")
    return parser


def _parse_values(text: str) -> np.ndarray:
    """A (seq, batch, 1) array from numbers or a JSON array; a flat list is one sequence."""
    text = text.strip()
    if not text:
        raise UsageError("no values given: pass sine values as arguments, with --file, or on standard input")
    if text.startswith("["):
        try:
            array = np.asarray(json.loads(text), dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"the values are not a numeric JSON array: {exc}") from None
    else:
        words = [word for word in NUMBER_SEPARATORS.split(text) if word]
        try:
            array = np.asarray([float(word) for word in words], dtype=np.float32)
        except ValueError as exc:
            raise UsageError(f"not a number: {exc}") from None
    if array.ndim == 1:
        array = array.reshape(-1, 1, 1)
    if array.ndim != 3 or array.size == 0:
        raise UsageError(f"values shaped {list(array.shape)}; expected a list of numbers or (seq, batch, 1)")
    if not np.isfinite(array).all():
        raise UsageError("the values must be finite numbers (no NaN or infinity)")
    return array


def _read_values(args: argparse.Namespace) -> np.ndarray:
    if args.values and args.file:
        raise UsageError("give values as arguments or with --file, not both")
    if args.values:
        return _parse_values(" ".join(args.values))
    if args.file and args.file != "-":
        try:
            with open(args.file, encoding="utf-8") as handle:
                return _parse_values(handle.read())
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    if args.file is None and sys.stdin.isatty():
        raise UsageError("no values given: pass sine values as arguments, with --file, or on standard input")
    return _parse_values(sys.stdin.read())


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param {pair!r}: expected NAME=VALUE, e.g. --param max_epochs=200")
        try:
            params[name] = json.loads(value)  # numbers and booleans as such
        except ValueError:
            params[name] = value
    return params


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _cmd_predict(client: Client, args: argparse.Namespace) -> int:
    inputs = _read_values(args)
    answer = client.prediction(inputs, model=args.model, version=args.version, binary=args.binary)
    if args.json:
        _print_json({"outputs": answer.outputs.tolist(), "model": answer.model, "version": answer.version})
        return EXIT_OK
    for row in answer.outputs[:, :, 0]:  # one line per time step, the batch's sequences side by side
        print(" ".join(f"{value:.6f}" for value in row))
    print(f"# {answer.model} version {answer.version}; the first 3 outputs are unreliable", file=sys.stderr)
    return EXIT_OK


def _cmd_models(client: Client, args: argparse.Namespace) -> int:
    models = client.models()
    if args.json:
        _print_json(models)
        return EXIT_OK
    for entry in models:
        aliases = ", ".join(f"{alias} -> v{version}" for alias, version in entry["aliases"].items()) or "no alias"
        print(f"{entry['name']}  serving v{entry['serving_version']}  ({aliases})")
        by_version: dict[int, list[str]] = {}
        for alias, version in entry["aliases"].items():
            by_version.setdefault(int(version), []).append(alias)
        for version in entry["versions"]:
            metrics = version["metrics"]
            worst = metrics.get("worst_mse")
            shown = "" if worst is None else f"  worst_mse {worst:.2e}"
            tags = ",".join(by_version.get(version["version"], []))
            serving = " *" if version["version"] == entry["serving_version"] else ""
            print(f"  v{version['version']:<4} {version['created_at']}{shown}  {tags}{serving}".rstrip())
        if entry.get("load_error"):
            print(f"  load error: {entry['load_error']}")
    return EXIT_OK


def _cmd_promote(client: Client, args: argparse.Namespace) -> int:
    answer = client.promote(args.model, args.version, alias=args.alias)
    if args.json:
        _print_json(answer)
    else:
        print(
            f"{answer['model']} {answer['alias']} -> version {answer['version']} (serving {answer['serving_version']})"
        )
    return EXIT_OK


def _cmd_register(client: Client, args: argparse.Namespace) -> int:
    try:
        with open(args.file, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    answer = client.register(args.model, data, fmt=args.format, source=args.source or os.path.basename(args.file))
    promoted = None
    if args.promote:
        promoted = client.promote(answer["model"], answer["version"], alias=args.promote)
    if args.json:
        _print_json(answer | {"alias_set": promoted})
        return EXIT_OK
    manifest = answer["manifest"]
    worst = manifest["metrics"].get("worst_mse")
    shown = "" if worst is None else f", worst_mse {worst:.2e}"
    print(f"{answer['model']} version {answer['version']} registered ({manifest['format']}{shown})")
    if promoted is not None:
        print(f"{promoted['model']} {promoted['alias']} -> version {promoted['version']}")
    return EXIT_OK


def _job_line(job: dict[str, Any]) -> str:
    progress = job["progress"]
    loss = "" if progress["loss"] is None else f" loss {progress['loss']:.2e}"
    result = job.get("result")
    made = f" -> {result['model']} v{result['version']}" if result else ""
    return (
        f"{job['id']}  {job['status']:9} {job['model']} {job['preset']}  "
        f"{progress['epoch']}/{progress['max_epochs']}{loss}{made}  {job['created_at']}"
    )


def _cmd_train(client: Client, args: argparse.Namespace) -> int:
    job = client.train(model=args.model, preset=args.preset, params=_parse_params(args.param), promote=args.promote)
    if not args.follow:
        if args.json:
            _print_json(job.data)
        else:
            print(job.id)
        return EXIT_OK
    print(f"job {job.id} queued", file=sys.stderr)
    bar = Progress(enabled=True)
    try:
        for snapshot in job.watch():
            bar.show(snapshot)
    except KeyboardInterrupt:
        bar.close()
        print(f"lstm: stopped following; the job goes on (lstm cancel {job.id} stops it)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    if args.json:
        _print_json(job.data)
    else:
        print(_job_line(job.data))
        if job.status != "succeeded":
            print(f"lstm: {JobFailedError(job.data)}", file=sys.stderr)
    return EXIT_OK if job.status == "succeeded" else EXIT_JOB_FAILED


def _cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    jobs = client.jobs(limit=args.limit)
    if args.json:
        _print_json([job.data for job in jobs])
    else:
        for job in jobs:
            print(_job_line(job.data))
    return EXIT_OK


def _cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    answer = client.cancel(args.id)
    if args.json:
        _print_json(answer)
    else:
        print(f"{answer['id']} {answer['status']}")
    return EXIT_OK


COMMANDS = {
    "predict": _cmd_predict,
    "models": _cmd_models,
    "promote": _cmd_promote,
    "register": _cmd_register,
    "train": _cmd_train,
    "jobs": _cmd_jobs,
    "cancel": _cmd_cancel,
}


def _fail(code: int, message: str) -> NoReturn:
    print(f"lstm: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (argparse's own usage errors exit 2 directly)."""
    args = _parser().parse_args(argv)
    try:
        with Client(args.url, token=args.token, timeout=args.timeout) as client:
            return COMMANDS[args.command](client, args)
    except UsageError as exc:
        _fail(EXIT_USAGE, str(exc))
    except ClientError as exc:
        _fail(EXIT_REFUSED, f"refused ({exc.status}): {exc.message}")
    except ServerError as exc:
        _fail(EXIT_SERVER, f"server error ({exc.status}): {exc.message}")
    except httpx.UnsupportedProtocol as exc:
        _fail(EXIT_USAGE, f"bad --url {args.url!r}: {exc}")
    except httpx.TransportError as exc:
        _fail(EXIT_SERVER, f"cannot reach {args.url}: {exc}")
    except httpx.InvalidURL as exc:
        _fail(EXIT_USAGE, f"bad --url {args.url!r}: {exc}")
    except KeyboardInterrupt:
        _fail(EXIT_INTERRUPTED, "interrupted")


def main() -> None:
    sys.exit(run())
