"""Structured logs: one JSON object per line when not on a terminal, with the current trace and span ids.

Secrets never reach a log line: values of keys that name a secret are replaced, and `SecretStr` values
print as stars by themselves.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

_SECRET_WORDS = ("secret", "token", "password", "authorization", "private", "psk", "client_state", "cookie")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact(key: str, value: object) -> object:
    return "[redacted]" if any(w in key.lower() for w in _SECRET_WORDS) else value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = f"{ctx.trace_id:032x}"
            out["span_id"] = f"{ctx.span_id:016x}"
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = redact(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={redact(k, v)}" for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
        )
        line = f"{record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        text = f"{line}  {extras}" if extras else line
        return text + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


def configure_logging(level: str = "info", stream: TextIO | None = None, json_lines: bool | None = None) -> None:
    """Route the `responder` loggers to `stream` (stderr): JSON unless it is a terminal."""
    stream = stream or sys.stderr
    use_json = not stream.isatty() if json_lines is None else json_lines
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger("responder")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
