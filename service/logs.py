"""Log lines of lstm-serve: a UTC timestamp on every line, as text or as one JSON object per line.

One configuration (`log_config`, a `logging.config.dictConfig` dict that uvicorn takes as its
`log_config`) serves the supervisor, every worker and `--workers 1`, so the service's own lines,
uvicorn's and its access lines all look alike and go to one stream (stderr) in order.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
ACCESS_LOGGER = "uvicorn.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"


def utc_iso(created: float) -> str:
    """A record's time as ISO 8601 in UTC with milliseconds: 2025-01-31T12:34:56.789Z."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """client, method, path and status of a uvicorn access line; {} for any other record.

    uvicorn logs each request as '%s - "%s %s HTTP/%s" %d' with args (client, method, path, http version, status).
    """
    args = record.args
    if record.name != ACCESS_LOGGER or not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, http_version, status = args
    return {"client": client, "method": method, "path": path, "http_version": http_version, "status": status}


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER [PID]: MESSAGE`, the time in UTC ISO 8601."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_iso(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message; client, method, path, status on access lines.

    A traceback goes into an `exception` field, so a record never spans lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
            **access_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


FORMATTERS: dict[LogFormat, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}


def log_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """The dictConfig for `level` and `log_format`: one stderr handler on the root logger, uvicorn's loggers into it.

    The formatter keys are uvicorn's ("default", "access") so that uvicorn.Config finds them where it expects.
    """
    formatter = {"()": f"{__name__}.{FORMATTERS[log_format].__name__}"}
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,  # the service's module-level loggers exist before this runs
        "formatters": {"default": formatter, "access": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's loggers lose the handlers of its own default config and write through the root's.
            name: {"handlers": [], "level": level, "propagate": True}
            for name in ("uvicorn", "uvicorn.error", ACCESS_LOGGER, "uvicorn.asgi")
        },
    }


def configure(level: str, log_format: LogFormat) -> dict[str, Any]:
    """Apply `log_config` in this process (warnings become log records too); returns it for uvicorn.Config."""
    config = log_config(level, log_format)
    logging.config.dictConfig(config)
    logging.captureWarnings(True)  # a Python warning is a line of the log, not stray text between its lines
    return config
