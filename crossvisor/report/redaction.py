"""Redaction of everything a report shows: every string from a guest, a host or a tool goes
through ``scrub`` (the shared routine, terminal control sequences removed) before it is rendered."""

from __future__ import annotations

import re
from functools import lru_cache

from crossvisor.core.redact import MASK, is_secret_key, redact_text

REDACTED = MASK

# ------------------------------------------------------------------------------------ redaction
# XML 1.0 cannot carry most C0 controls (console logs are full of ESC); HTML shows them as junk.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
# ANSI colour/cursor sequences in console excerpts: removed whole, not just their ESC byte.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@lru_cache(maxsize=65536)  # reasons and evidence repeat across cells; the regexes dominate render time
def redact(text: str) -> str:
    """``text`` through the shared redaction routine, terminal control sequences removed."""
    return redact_text(_CONTROL.sub("", _ANSI.sub("", text)))


def redact_mapping(values: dict[str, str]) -> dict[str, str]:
    """Values under secret-named keys are dropped entirely; the rest go through ``redact``."""
    return {scrub(str(k)): REDACTED if is_secret_key(str(k)) else scrub(str(v)) for k, v in (values or {}).items()}


def scrub(text: object) -> str:
    """The one place rendered text meets redaction: everything this module and ``serve`` show."""
    return redact(str(text))


def _credentials_ref(ref: str) -> str:
    # A reference ("env:NAME", "file:/path") is reproducibility data; anything else is a leak.
    if not ref or re.fullmatch(r"(env|file):[\w./-]+", ref):
        return ref
    return REDACTED
