"""Campaign reports rendered from a ``CampaignResult``: HTML, JUnit XML and JSON.

Pure functions (no I/O) so the CLI, tests and any CI job render identical output. Every string
that came from a guest, a host or a tool is untrusted: it is escaped for its output format,
stripped of characters XML cannot carry, and passed through ``redact`` so a password that slipped
into an error message or evidence never lands in a report that gets mailed around.
"""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict
from typing import Any
from urllib.parse import quote, urlsplit

from domain.model import (
    CampaignResult,
    CellResult,
    CheckResult,
    Grade,
    Host,
    overall_grade,
)

REDACTED = "[REDACTED]"

# Evidence/custom keys whose values are secrets whatever they look like.
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|credential|auth|cookie|session",
    re.IGNORECASE,
)
# "password=hunter2", "token: abc", "Authorization: Bearer x" inside free text.
_SECRET_IN_TEXT = re.compile(
    r"(?P<key>\b[\w-]*(?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key)[\w-]*"
    r"\s*[=:]\s*)(?P<q>['\"]?)(?P<val>[^\s'\",;&]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
# user:password@ in any URL.
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/\s:@]*):[^/\s@]*@", re.IGNORECASE)
# NetBox v2 tokens and PEM private keys are recognisable on their own.
_TOKEN_SHAPES = re.compile(
    r"nbt_[A-Za-z0-9]+\.[A-Za-z0-9]+"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    re.DOTALL,
)
# XML 1.0 cannot carry most C0 controls (console logs are full of ESC); HTML shows them as junk.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")

_GRADE_ORDER = (Grade.PASS, Grade.FAIL, Grade.ERROR, Grade.SKIPPED)
_PATH_PREFIX = "path:"


def redact(text: str) -> str:
    """``text`` with anything secret-looking replaced by ``[REDACTED]`` and control chars removed."""
    text = _CONTROL.sub("", text)
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _SECRET_IN_TEXT.sub(lambda m: f"{m['key']}{m['q']}{REDACTED}", text)


def redact_mapping(values: dict[str, str]) -> dict[str, str]:
    """Values under secret-named keys are dropped entirely; the rest go through ``redact``."""
    return {redact(str(k)): REDACTED if _SECRET_KEY.search(str(k)) else redact(str(v)) for k, v in values.items()}


def _credentials_ref(ref: str) -> str:
    # A reference ("env:NAME", "file:/path") is reproducibility data; anything else is a leak.
    if not ref or re.fullmatch(r"(env|file):[\w./-]+", ref):
        return ref
    return REDACTED


def _evidence_link(value: str) -> str | None:
    """Relative href for ``path:<relative path>`` evidence; None for anything that could escape."""
    if not value.startswith(_PATH_PREFIX):
        return None
    path = value[len(_PATH_PREFIX) :].strip()
    parts = path.replace("\\", "/").split("/")
    if not path or path.startswith(("/", "~")) or ".." in parts or urlsplit(path).scheme:
        return None
    return quote(path.replace("\\", "/"))


def _host_dict(host: Host) -> dict[str, Any]:
    data = asdict(host)
    data["endpoint"] = redact(host.endpoint)
    data["credentials_ref"] = _credentials_ref(host.credentials_ref)
    data["custom"] = redact_mapping(host.custom)
    return data


def _check_dict(check: CheckResult) -> dict[str, Any]:
    return {
        "check": check.check,
        "grade": check.grade.value,
        "reason": redact(check.reason),
        "evidence": redact_mapping(check.evidence),
    }


def _cell_dict(cell: CellResult) -> dict[str, Any]:
    return {
        "cell_id": cell.cell_id,
        "source": cell.source,
        "target": cell.target,
        "image": cell.image,
        "grade": cell.grade.value,
        "source_host": cell.source_host,
        "target_host": cell.target_host,
        "fingerprint": cell.fingerprint,
        "cached": cell.cached,
        "checks": [_check_dict(c) for c in cell.checks],
        "stages": [{**asdict(s), "reason": redact(s.reason)} for s in cell.stages],
    }


def _summary(result: CampaignResult) -> dict[str, int]:
    counts = Counter(cell.grade.value for cell in result.cells)
    return {"cells": len(result.cells)} | {g.value: counts.get(g.value, 0) for g in _GRADE_ORDER}


def _ordered(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))  # first-seen order: the campaign's own order


def _axes(result: CampaignResult) -> tuple[list[str], list[str], list[str], list[str]]:
    cells = result.cells
    checks = _ordered([c.check for cell in cells for c in cell.checks])
    return (
        _ordered([c.source for c in cells]),
        _ordered([c.target for c in cells]),
        _ordered([c.image for c in cells]),
        checks,
    )


# ----------------------------------------------------------------------------------------- JSON


def render_json(result: CampaignResult) -> str:
    doc = {
        "campaign_id": result.campaign_id,
        "name": result.name,
        "status": result.status,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "summary": _summary(result),
        "cells": [_cell_dict(c) for c in result.cells],
        "hosts": [_host_dict(h) for h in result.hosts],
    }
    return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------- JUnit


def _cell_seconds(cell: CellResult) -> float:
    return sum(s.duration_s for s in cell.stages)


def _evidence_text(check: CheckResult) -> str:
    lines = [f"{k}: {v}" for k, v in redact_mapping(check.evidence).items()]
    return "\n".join(lines)


def render_junit(result: CampaignResult) -> str:
    """One testsuite per source->target pair, one testcase per image/check."""
    root = ET.Element("testsuites", name=redact(result.name), id=redact(result.campaign_id))
    totals: Counter[str] = Counter()
    pairs: dict[tuple[str, str], list[CellResult]] = {}
    for cell in result.cells:
        pairs.setdefault((cell.source, cell.target), []).append(cell)

    for (source, target), cells in pairs.items():
        suite = ET.SubElement(root, "testsuite", name=redact(f"{source}->{target}"))
        counts: Counter[str] = Counter()
        for cell in cells:
            for check in cell.checks:
                counts["tests"] += 1
                case = ET.SubElement(
                    suite,
                    "testcase",
                    classname=redact(f"crossvisor.{result.name}.{source}->{target}"),
                    name=redact(f"{cell.image}/{check.check}"),
                    time="0",
                )
                reason = redact(check.reason) or check.grade.value
                if check.grade == Grade.FAIL:
                    counts["failures"] += 1
                    el = ET.SubElement(case, "failure", message=reason, type="interop")
                    el.text = _evidence_text(check)
                elif check.grade == Grade.ERROR:
                    counts["errors"] += 1
                    el = ET.SubElement(case, "error", message=reason, type="infrastructure")
                    el.text = _evidence_text(check)
                elif check.grade == Grade.SKIPPED:
                    counts["skipped"] += 1
                    ET.SubElement(case, "skipped", message=reason)
        suite.set("tests", str(counts["tests"]))
        for key in ("failures", "errors", "skipped"):
            suite.set(key, str(counts[key]))
        suite.set("time", f"{sum(_cell_seconds(c) for c in cells):.3f}")
        # Per-cell hosts and stage timings: CI viewers show system-out next to the suite.
        out = ET.SubElement(suite, "system-out")
        out.text = "\n".join(
            redact(
                f"{c.image}: grade={c.grade.value} source_host={c.source_host} "
                f"target_host={c.target_host} cached={c.cached} stages="
                + ", ".join(f"{s.stage}:{s.status}:{s.duration_s:.1f}s" for s in c.stages)
            )
            for c in cells
        )
        totals.update(counts)

    root.set("tests", str(totals["tests"]))
    for key in ("failures", "errors", "skipped"):
        root.set(key, str(totals[key]))
    root.set("time", f"{sum(_cell_seconds(c) for c in result.cells):.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ----------------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d1d1f;background:#fff}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.grade{text-align:center;font-weight:600;min-width:6rem}
.grade-pass{background:#c8f0c8;color:#0b4d0b}.grade-fail{background:#f8c4c4;color:#7a0b0b}
.grade-error{background:#ffd9a8;color:#6b3b00}.grade-skipped{background:#e4e4e4;color:#444}
.grade-none{background:#fafafa;color:#999}
.checks{font-weight:normal;font-size:.8rem;display:block}
.summary span{margin-right:1rem;padding:.1rem .4rem;border-radius:.2rem}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem}
pre{white-space:pre-wrap;margin:0}
"""


def _e(text: object) -> str:
    return html.escape(redact(str(text)), quote=True)


def _grade_td(grade: Grade | None, attrs: dict[str, str], inner: str = "") -> str:
    name = grade.value if grade else "none"
    data = "".join(f' data-{k}="{_e(v)}"' for k, v in attrs.items())
    label = name.upper() if grade else "&mdash;"
    return f'<td class="grade grade-{name}" data-grade="{name}"{data}>{label}{inner}</td>'


def _matrix(
    sources: list[str],
    targets: list[str],
    cell_for: Any,
    attrs: dict[str, str],
    inner: Any,
) -> str:
    rows = ["<table class='matrix'><tr><th>source &darr; / target &rarr;</th>"]
    rows += [f"<th>{_e(t)}</th>" for t in targets]
    rows.append("</tr>")
    for s in sources:
        rows.append(f"<tr><th>{_e(s)}</th>")
        for t in targets:
            grade, extra = cell_for(s, t)
            rows.append(
                _grade_td(
                    grade,
                    {**attrs, "source": s, "target": t},
                    inner(extra) if grade else "",
                )
            )
        rows.append("</tr>")
    rows.append("</table>")
    return "".join(rows)


def _evidence_html(evidence: dict[str, str]) -> str:
    items = []
    for key, value in evidence.items():
        if _SECRET_KEY.search(key):
            items.append(f"<li><code>{_e(key)}</code>: {REDACTED}</li>")
            continue
        href = _evidence_link(value)
        if href is not None:
            shown = value[len(_PATH_PREFIX) :]
            items.append(f'<li><code>{_e(key)}</code>: <a href="{_e(href)}">{_e(shown)}</a></li>')
        else:
            items.append(f"<li><code>{_e(key)}</code>: <pre>{_e(value)}</pre></li>")
    return f"<ul>{''.join(items)}</ul>" if items else ""


def render_html(result: CampaignResult) -> str:
    """A single self-contained page: inline CSS, no scripts, no external assets."""
    sources, targets, images, checks = _axes(result)
    by_key = {(c.source, c.target, c.image): c for c in result.cells}
    summary = _summary(result)
    out: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        # No network access from the page at all, even if a hostile string slipped through.
        (
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src 'self' data:\">"
        ),
        f"<title>crossvisor report: {_e(result.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(result.name)}</h1>",
        (
            f"<p>Campaign <code>{_e(result.campaign_id)}</code> &middot; status <b>{_e(result.status)}</b>"
            f" &middot; started {_e(result.started_at or '-')} &middot; finished {_e(result.finished_at or '-')}</p>"
        ),
        "<p class='summary' id='summary'>",
        f"<span>{summary['cells']} cells</span>",
        *(
            f"<span class='grade-{g.value}' data-count-{g.value}='{summary[g.value]}'>"
            f"{g.value}: {summary[g.value]}</span>"
            for g in _GRADE_ORDER
        ),
        "</p>",
        "<h2>Matrix by image</h2>",
    ]

    def check_list(cell: CellResult) -> str:
        return "<span class='checks'>" + " ".join(f"{_e(c.check)}:{c.grade.value}" for c in cell.checks) + "</span>"

    for image in images:
        out.append(f"<h3>Image <code>{_e(image)}</code></h3>")

        def for_image(s: str, t: str, image: str = image) -> tuple[Grade | None, Any]:
            cell = by_key.get((s, t, image))
            return (cell.grade if cell else None), cell

        out.append(_matrix(sources, targets, for_image, {"image": image}, check_list))

    out.append("<h2>Matrix by check</h2><p>Worst grade over all images; counts are passes / graded.</p>")
    for check in checks:
        out.append(f"<h3>Check <code>{_e(check)}</code></h3>")

        def for_check(s: str, t: str, check: str = check) -> tuple[Grade | None, Any]:
            grades = [
                c.grade
                for cell in result.cells
                if cell.source == s and cell.target == t
                for c in cell.checks
                if c.check == check
            ]
            return (overall_grade(grades) if grades else None), grades

        def counts(grades: list[Grade]) -> str:
            passed = sum(g == Grade.PASS for g in grades)
            return f"<span class='checks'>{passed}/{len(grades)}</span>"

        out.append(_matrix(sources, targets, for_check, {"check": check}, counts))

    failures = [
        (cell, check) for cell in result.cells for check in cell.checks if check.grade in (Grade.FAIL, Grade.ERROR)
    ]
    out.append(f"<h2>Failures and errors ({len(failures)})</h2>")
    if failures:
        out.append(
            "<table id='failures'><tr><th>source &rarr; target</th><th>image</th><th>check</th>"
            "<th>grade</th><th>reason</th><th>evidence</th></tr>"
        )
        for cell, check in failures:
            out.append(
                f"<tr><td>{_e(cell.source)} &rarr; {_e(cell.target)}</td><td>{_e(cell.image)}</td>"
                f"<td>{_e(check.check)}</td>"
                + _grade_td(check.grade, {"cell": cell.cell_id, "check": check.check})
                + f"<td><pre>{_e(check.reason)}</pre></td><td>{_evidence_html(check.evidence)}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append("<p>None.</p>")

    out.append(
        "<h2>Cells</h2><table id='cells'><tr><th>cell</th><th>grade</th><th>hosts</th>"
        "<th>stages (status, seconds, attempts)</th></tr>"
    )
    for cell in result.cells:
        stages = "<br>".join(
            f"{_e(s.stage)}: {_e(s.status)} {s.duration_s:.1f}s"
            + (f" &times;{s.attempts}" if s.attempts > 1 else "")
            + (f" &mdash; {_e(s.reason)}" if s.reason else "")
            for s in cell.stages
        )
        cached = " (cached)" if cell.cached else ""
        out.append(
            f"<tr><td><code>{_e(cell.cell_id)}</code>{cached}</td>"
            + _grade_td(cell.grade, {"cell": cell.cell_id})
            + f"<td>{_e(cell.source_host or '-')} &rarr; {_e(cell.target_host or '-')}</td>"
            f"<td>{stages}</td></tr>"
        )
    out.append("</table>")

    out.append(f"<h2>Inventory snapshot ({len(result.hosts)} hosts)</h2>")
    out.append(
        "<table id='inventory'><tr><th>name</th><th>kind</th><th>driver</th><th>endpoint</th>"
        "<th>site</th><th>version</th><th>tags</th><th>cpus</th><th>memory MiB</th><th>slots</th>"
        "<th>status</th><th>credentials</th><th>custom</th></tr>"
    )
    for host in result.hosts:
        h = _host_dict(host)
        custom = ", ".join(f"{k}={v}" for k, v in h["custom"].items())
        out.append(
            "<tr>"
            + "".join(f"<td>{_e(h[k])}</td>" for k in ("name", "kind", "driver", "endpoint", "site", "version"))
            + f"<td>{_e(', '.join(host.tags))}</td><td>{host.cpus}</td><td>{host.memory_mib}</td>"
            f"<td>{host.slots}</td><td>{_e(host.status)}</td><td>{_e(h['credentials_ref'])}</td>"
            f"<td>{_e(custom)}</td></tr>"
        )
    out.append("</table></body></html>\n")
    return "\n".join(out)
