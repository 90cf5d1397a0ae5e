"""structlog JSON logs with campaign/cell/stage/host context, and secrets redacted on the way out."""

from __future__ import annotations

import logging
import re
import sys

import structlog

_SECRET_KEYS = re.compile(r"pass(word)?|token|secret|api_?key|authorization|cookie", re.I)
# values that look like credentials even under an innocent key: NetBox v1/v2 tokens, basic auth in URLs
_SECRET_VALUES = [
    (re.compile(r"nbt_[A-Za-z0-9]+\.[A-Za-z0-9]+"), "nbt_***"),
    (re.compile(r"(?i)\b(token\s+)[0-9a-f]{40}\b"), r"\1***"),
    (re.compile(r"(?<=://)([^:/@\s]+):([^@/\s]+)@"), r"\1:***@"),
]
_extra: set[str] = set()  # exact secret values known to this process (resolved credentials)


def register_secret(value: str) -> None:
    """Remember a resolved secret so that it is masked wherever it would appear in a log line."""
    if value and len(value) >= 4:
        _extra.add(value)


def redact_text(text: str) -> str:
    for v in _extra:
        text = text.replace(v, "***")
    for pat, repl in _SECRET_VALUES:
        text = pat.sub(repl, text)
    return text


def _redact(_logger: object, _name: str, event: dict) -> dict:
    for k, v in list(event.items()):
        if _SECRET_KEYS.search(k) and k != "credentials_ref":
            event[k] = "***"
        elif isinstance(v, str):
            event[k] = redact_text(v)
    return event


def configure(level: str = "info", stream=None) -> None:
    logging.basicConfig(
        format="%(message)s",
        stream=stream or sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(**ctx: object) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger("crossvisor").bind(**ctx)
