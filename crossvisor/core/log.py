"""structlog logs with campaign/cell/stage/host context, and secrets redacted on the way out.

Two formats (``CROSSVISOR_LOG_FORMAT``): ``json`` (one object a line, for collectors; the default)
and ``console`` (aligned, for people); ``auto`` picks console when the stream is a terminal. Both
go through the same redaction.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

from crossvisor.core.redact import redact_text, redact_value, register_secret

# Re-exported for callers that only know the logging module; the rules live in core/redact.py.
__all__ = ["configure", "get", "redact_text", "register_secret"]


def _redact(_logger: object, _name: str, event: dict) -> dict:
    """structlog processor: every field through the one redaction routine (exception text included,
    since ``format_exc_info`` runs before it)."""
    return redact_value(event)


class _RedactingFormatter(logging.Formatter):
    """stdlib records (temporalio's worker and activity loggers, libraries) are rendered by the
    handler's own formatter, then redacted: an activity failure logged by the SDK carries the
    exception message and traceback."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record))


_json = structlog.processors.JSONRenderer()
_console = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=28, sort_keys=False)
FORMATS = ("json", "console", "auto")


def _render(logger: object, name: str, event: dict) -> str:
    # fields were redacted one by one; the rendered line is redacted again because objects
    # (exceptions, dataclasses) are only turned into text here, by their repr
    return redact_text(_json(logger, name, event))


def _render_console(logger: object, name: str, event: dict) -> str:
    return redact_text(_console(logger, name, event))


def resolve_format(fmt: str, stream=None) -> str:
    """json | console; ``auto`` = console on a terminal. Anything else is a clear error."""
    fmt = (fmt or "json").lower()
    if fmt not in FORMATS:
        raise ValueError(f"CROSSVISOR_LOG_FORMAT={fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "auto":
        s = stream or sys.stderr
        return "console" if hasattr(s, "isatty") and s.isatty() else "json"
    return fmt


def configure(level: str = "info", stream=None, fmt: str | None = None) -> None:
    """``fmt``: json | console | auto; None = ``CROSSVISOR_LOG_FORMAT`` (default json)."""
    if fmt is None:
        fmt = os.environ.get("CROSSVISOR_LOG_FORMAT", "json")
    logging.basicConfig(
        format="%(message)s",
        stream=stream or sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
    )
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, _RedactingFormatter):
            handler.setFormatter(_RedactingFormatter(handler.formatter))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            _render_console if resolve_format(fmt, stream) == "console" else _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(**ctx: object) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger("crossvisor").bind(**ctx)
