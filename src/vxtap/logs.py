"""Logging for every long-running vxtap command: one line per event, as text or JSON.

`vxtap server`, `vxtap agent` and `vxtap collect` call `setup_logging` with their
`--log-level` and `--log-format` (docs/deploy.md, "Logs"). Why one line: journald,
`grep` and log shippers see one event per line; a multi-line traceback would be
several unrelated lines to them.

- text: `2026-12-04T10:00:00.123Z vxtap-agent INFO message`; an exception adds
  `[Type: message]`, and its traceback only at debug level, escaped onto the line.
- json: `{"time", "level", "program", "logger", "message"}`, plus `exception` and
  `traceback` when there is one.

Expected failures (bad input, a server that is down) are logged or reported as
one line without a traceback; tracebacks are for bugs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, Literal, TextIO, TypeVar

import click

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Libraries that log every request (or migration step) at INFO; shown at debug level only.
_CHATTY = ("httpx", "httpcore", "uvicorn.access", "alembic")

F = TypeVar("F", bound=Callable[..., Any])


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + (
        f".{int(created % 1 * 1000):03d}Z"
    )


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def _exception_summary(record: logging.LogRecord) -> str | None:
    if not record.exc_info or record.exc_info[1] is None:
        return None
    error = record.exc_info[1]
    return f"{type(error).__name__}: {error}"


def _traceback(record: logging.LogRecord) -> str | None:
    if not record.exc_info or record.exc_info[1] is None:
        return None
    return "".join(traceback.format_exception(*record.exc_info)).rstrip()


class TextFormatter(logging.Formatter):
    def __init__(self, program: str, *, tracebacks: bool) -> None:
        super().__init__()
        self.program = program
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record.created)} {self.program} {record.levelname} "
            f"{_one_line(record.getMessage())}"
        )
        if summary := _exception_summary(record):
            line += f" [{_one_line(summary)}]"
            if self.tracebacks and (trace := _traceback(record)):
                line += f" {_one_line(trace)}"
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, str] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "program": self.program,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if summary := _exception_summary(record):
            event["exception"] = summary
            event["traceback"] = _traceback(record) or ""
        return json.dumps(event, ensure_ascii=False)


def setup_logging(
    program: str, level: str = "info", log_format: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Send every logger's records to `stream` (stderr) in `log_format`, replacing any
    handlers set before."""
    handler = logging.StreamHandler(stream or sys.stderr)
    debug = level.lower() == "debug"
    handler.setFormatter(
        JsonFormatter(program) if log_format == "json" else TextFormatter(program, tracebacks=debug)
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def log_options(function: F) -> F:
    """`--log-level` and `--log-format` for a command that calls `setup_logging`."""
    function = click.option(
        "--log-format",
        type=click.Choice(LOG_FORMATS),
        default="text",
        show_default=True,
        help="One line per event: text, or one JSON object per line.",
    )(function)
    return click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS),
        default="info",
        show_default=True,
        help="Least severe level logged (debug adds tracebacks and each request).",
    )(function)
