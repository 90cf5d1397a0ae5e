"""HTML's small pieces every page shares: escaping (untrusted text redacted first) and ``Links``,
how a page links to a cell and its files (anchors in the one-file report, routes in the web UI)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from crossvisor.report.redaction import scrub
from domain.model import (
    CellResult,
)


def escape(text: object) -> str:
    """Untrusted text for HTML text or a quoted attribute: redacted, then escaped."""
    return html.escape(scrub(text), quote=True)


_e = escape


def _a(text: str) -> str:
    """Trusted text (grade values, numbers, our own ids) for HTML: escaped only."""
    return html.escape(text, quote=True)


def cell_anchor(cell_id: str) -> str:
    return "cell-" + re.sub(r"[^A-Za-z0-9_.-]", "_", cell_id)


@dataclass(frozen=True)
class Links:
    """How pages link to a cell and to its files: anchors in the one-file report, routes in the
    web UI. ``artifact`` returns None when a file cannot be linked (shown as its path)."""

    cell: Callable[[str], str] = lambda cell_id: "#" + cell_anchor(cell_id)
    artifact: Callable[[CellResult, str], str | None] = lambda cell, name: None
    console: Callable[[CellResult], str | None] = lambda cell: None


def file_links(artifact_base: str | None) -> Links:
    """Links for a report file: artifact paths (relative to CROSSVISOR_HOME) under ``artifact_base``
    (a relative or file: URL to that home), or plain text when there is none."""
    if not artifact_base:
        return Links()
    base = artifact_base if artifact_base.endswith("/") else artifact_base + "/"

    def artifact(cell: CellResult, name: str) -> str | None:
        rel = safe_relative(cell.artifacts.get(name, ""))
        return base + quote(rel) if rel else None

    return Links(artifact=artifact)


def safe_relative(path: str) -> str | None:
    """A relative path that cannot leave the directory it is relative to, or None."""
    path = (path or "").strip().replace("\\", "/")
    parts = path.split("/")
    if not path or path.startswith(("/", "~")) or ".." in parts or urlsplit(path).scheme:
        return None
    return path
