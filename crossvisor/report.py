"""Campaign reports rendered from a ``CampaignResult``: HTML, JUnit XML and JSON.

Pure functions (no I/O beyond reading this package's own stylesheet once) so the CLI, the web UI
(``crossvisor serve``), tests and any CI job render identical output. Every string that came from a
guest, a host or a tool is untrusted: it is escaped for its output format, stripped of characters
XML cannot carry, and passed through ``scrub`` so a password that slipped into an error message or
evidence never lands in a report that gets mailed around.

The HTML page shows before it lists: an ODCA-style scorecard beside the matrix (sources down,
targets across, one order on both axes), failures grouped by root cause, charts (pass-rate heatmap,
stage durations, the campaign's timeline), the comparison with a previous campaign, and one detail
section per cell (stage timeline, every check with its prediction and evidence, console excerpt,
remediation ladder, artifacts). The web UI reuses the same pieces with other links (``Links``).
"""

from __future__ import annotations

import html
import json
import re
import statistics
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

from crossvisor.core.redact import MASK, is_secret_key, redact_text, redact_uri
from domain.model import (
    CHECKS,
    STAGES,
    CampaignResult,
    CellResult,
    CellSummary,
    CheckResult,
    Grade,
    Host,
    Prediction,
    RemediationRecord,
    StageRecord,
    agrees,
)

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


# ----------------------------------------------------------------------------- time, durations


def parse_time(iso: str) -> datetime | None:
    """An ISO 8601 timestamp as aware UTC; None for empty or unparsable text."""
    if not iso:
        return None
    try:
        dt = datetime.fromisoformat(iso.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def human_time(iso: str) -> str:
    """'Tue 1 Dec 2026, 08:56:39 UTC'; the raw text when it is not a timestamp; '—' when empty."""
    dt = parse_time(iso)
    if dt is None:
        return iso or "\u2014"
    return f"{dt:%a} {dt.day} {dt:%b %Y, %H:%M:%S} UTC"


def human_duration(seconds: float | None) -> str:
    """'0.4 s', '42 s', '4 min 05 s', '2 h 04 min', '3 d 4 h'."""
    if seconds is None:
        return "\u2014"
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        m, sec = divmod(round(s), 60)
        return f"{m} min {sec:02d} s"
    if s < 86400:
        h, m = divmod(round(s / 60), 60)
        return f"{h} h {m:02d} min"
    d, h = divmod(round(s / 3600), 24)
    return f"{d} d {h} h"


def span_seconds(start: str, end: str) -> float | None:
    a, b = parse_time(start), parse_time(end)
    return (b - a).total_seconds() if a and b and b >= a else None


def cell_seconds(cell: CellResult) -> float:
    """Wall time of a cell: its own timestamps when recorded, else the sum of its stages."""
    span = span_seconds(cell.started_at, cell.finished_at)
    return span if span is not None else sum(s.duration_s for s in cell.stages)


# ------------------------------------------------------------------------------------ analysis

WORKS = (Grade.PASS, Grade.WARN)  # ODCA success and warning: the guest works on the target
VERDICTS = (Grade.PASS, Grade.WARN, Grade.FAIL)  # error/skipped say nothing about interop
GRADES = (Grade.PASS, Grade.WARN, Grade.FAIL, Grade.ERROR, Grade.SKIPPED)
# A check's grades: a check no channel of its guest could see is unobservable (shown apart, no verdict)
CHECK_GRADES = (*GRADES, Grade.UNOBSERVABLE)
ODCA_LABEL = {
    Grade.PASS: "success",
    Grade.WARN: "warning",
    Grade.FAIL: "failure",
    Grade.ERROR: "error",
    Grade.SKIPPED: "skipped",
    Grade.UNOBSERVABLE: "unobservable",
}
BAD = (Grade.FAIL, Grade.ERROR)

# Which platform's host ran a stage: the source exports, the target converts, imports and boots.
SOURCE_STAGES = ("reserve", "provision", "baseline", "export", "cleanup", "release")
# The stage whose observation decides a check (its JUnit time).
CHECK_STAGE = {
    "boots": "boot",
    "disks": "verify",
    "cpu_memory": "verify",
    "nics": "verify",
    "app": "verify",
    "metadata": "verify",
    "lifecycle": "lifecycle",
}


def _first_seen(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def platform_order(result: CampaignResult) -> list[str]:
    """One order for both matrix axes: platforms as the campaign first met them (spec order, since
    cells expand source-major), so the diagonal (source == target) runs corner to corner."""
    return _first_seen(p for c in result.cells for p in (c.source, c.target))


def image_order(result: CampaignResult) -> list[str]:
    return _first_seen(c.image for c in result.cells)


def check_order(result: CampaignResult) -> list[str]:
    seen = set(ch.check for c in result.cells for ch in c.checks)
    return [c for c in CHECKS if c in seen] + sorted(seen - set(CHECKS))


def first_reason(cell: CellResult) -> str:
    """The reason of the worst check (what a one-line summary of the cell says)."""
    worst = cell.grade
    for ch in cell.checks:
        if ch.grade == worst and ch.reason:
            return f"{ch.check}: {ch.reason}"
    return ""


@dataclass
class Tally:
    """Counts of cells by grade, what remedies made the warnings work, and how the predictions did."""

    grades: Counter = field(default_factory=Counter)
    remedies: Counter = field(default_factory=Counter)
    predicted: int = 0  # check predictions compared with an observation that carries a verdict
    missed: int = 0

    def add(self, cell: CellResult, grade: Grade) -> None:
        self.grades[grade] += 1
        if grade == Grade.WARN:
            self.remedies[cell.remedy or "unnamed remedy"] += 1
        observed = {c.check: c.grade for c in cell.checks}
        for p in cell.predictions:
            obs = observed.get(p.check)
            if obs in VERDICTS and p.grade in VERDICTS:
                self.predicted += 1
                self.missed += not agrees(p.grade, obs)

    @property
    def total(self) -> int:
        return sum(self.grades.values())

    @property
    def verdicts(self) -> int:
        return sum(self.grades[g] for g in VERDICTS)

    def share(self, grade: Grade) -> float | None:
        return self.grades[grade] / self.verdicts if self.verdicts else None


@dataclass
class Scorecard:
    overall: Tally
    by_pair: dict[tuple[str, str], Tally]
    by_image: dict[str, Tally]


def scorecard(result: CampaignResult) -> Scorecard:
    """ODCA-style tallies of cells: per source -> target pair, per guest image, and overall."""
    order = {p: i for i, p in enumerate(platform_order(result))}
    overall, by_pair, by_image = Tally(), {}, {}
    for cell in result.cells:
        g = cell.grade
        overall.add(cell, g)
        by_pair.setdefault((cell.source, cell.target), Tally()).add(cell, g)
        by_image.setdefault(cell.image, Tally()).add(cell, g)
    pairs = dict(sorted(by_pair.items(), key=lambda kv: (order[kv[0][0]], order[kv[0][1]])))
    return Scorecard(overall, pairs, by_image)


@dataclass
class RootCause:
    """One observed cause and every cell it hit (a failed import fails all of a cell's checks with
    the same reason: one line here, not six table rows)."""

    grade: Grade  # FAIL (interop) or ERROR (infrastructure)
    reason: str  # as first observed (unredacted: render through ``scrub``)
    checks: list[str]
    cells: list[str]  # cell ids, campaign order


_HEX_ID = re.compile(r"\b[0-9a-f]{12,}\b", re.IGNORECASE)
_ELAPSED = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s|sec|seconds|min)\b")
_TMP_PATH = re.compile(r"/(?:tmp|var/tmp)/\S+")


def cause_key(reason: str, cell: CellResult) -> str:
    """``reason`` with what differs between cells hit by the same cause (the cell's own id and
    hosts, elapsed times, temp paths, content hashes) replaced, so those cells group together."""
    key = reason
    for name, mark in ((cell.cell_id, "<cell>"), (cell.source_host, "<host>"), (cell.target_host, "<host>")):
        if name:
            key = key.replace(name, mark)
    key = _HEX_ID.sub("<id>", key)
    key = _ELAPSED.sub("<t>", key)
    return _TMP_PATH.sub("<tmp>", key).strip()


_NOT_REACHED = re.compile(r"not reached: (\w+) (?:failed|errored)")


def root_causes(result: CampaignResult) -> list[RootCause]:
    """Failures and errors grouped by cause, the cause that hit most cells first. A check that was
    not reached because another failed ("not reached: boots failed") belongs to that check's cause."""
    groups: dict[tuple[Grade, str], RootCause] = {}
    for cell in result.cells:
        bad = {ch.check: ch for ch in cell.checks if ch.grade in BAD}
        cause_of: dict[str, tuple[Grade, str]] = {}
        for ch in bad.values():
            m = _NOT_REACHED.match(ch.reason)
            upstream = bad.get(m.group(1)) if m else None
            if upstream is not None and not _NOT_REACHED.match(upstream.reason):
                continue  # folded into the upstream check's cause below
            key = (ch.grade, cause_key(ch.reason or ch.grade.value, cell))
            cause_of[ch.check] = key
            rc = groups.setdefault(key, RootCause(ch.grade, ch.reason or ch.grade.value, [], []))
            if ch.check not in rc.checks:
                rc.checks.append(ch.check)
            if not rc.cells or rc.cells[-1] != cell.cell_id:
                rc.cells.append(cell.cell_id)
        for ch in bad.values():
            m = _NOT_REACHED.match(ch.reason)
            if ch.check not in cause_of and m and m.group(1) in cause_of:
                rc = groups[cause_of[m.group(1)]]
                if ch.check not in rc.checks:
                    rc.checks.append(ch.check)
    causes = list(groups.values())
    causes.sort(key=lambda rc: (rc.grade != Grade.FAIL, -len(rc.cells), rc.reason))
    return causes


@dataclass
class Change:
    source: str
    target: str
    image: str
    cell_id: str
    before: Grade | None  # None: the cell is new in this campaign
    after: Grade | None  # None: the cell is gone
    reason_before: str = ""
    reason_after: str = ""


@dataclass
class Comparison:
    previous_id: str
    previous_name: str
    previous_finished: str
    new_failures: list[Change]
    fixed: list[Change]
    still_failing: list[Change]
    other_changes: list[Change]  # pass <-> warn, to/from error or skipped, cells added/removed
    unchanged: int  # cells with the same non-failing grade


def compare(current: CampaignResult, previous: CampaignResult) -> Comparison:
    """Cell by cell (source, target, image) against an earlier campaign of the same spec."""
    before = {(c.source, c.target, c.image): c for c in previous.cells}
    seen = set()
    new, fixed, still, other, same = [], [], [], [], 0
    for cell in current.cells:
        key = (cell.source, cell.target, cell.image)
        seen.add(key)
        old = before.get(key)
        now = cell.grade
        ch = Change(*key, cell.cell_id, old.grade if old else None, now, first_reason(old) if old else "")
        ch.reason_after = first_reason(cell)
        if old is None:
            (new if now == Grade.FAIL else other).append(ch)
        elif now == Grade.FAIL and old.grade != Grade.FAIL:
            new.append(ch)
        elif old.grade == Grade.FAIL and now in WORKS:
            fixed.append(ch)
        elif now == old.grade == Grade.FAIL:
            still.append(ch)
        elif now != old.grade:
            other.append(ch)
        else:
            same += 1
    for key, old in before.items():
        if key not in seen:
            other.append(Change(*key, old.cell_id, old.grade, None, first_reason(old)))
    return Comparison(previous.campaign_id, previous.name, previous.finished_at, new, fixed, still, other, same)


# ---------------------------------------------------------------------------------------- JSON


def _host_dict(host: Host) -> dict[str, Any]:
    data = asdict(host)
    for key in ("name", "site", "version", "status", "inventory_id"):
        data[key] = scrub(data[key])
    data["endpoint"] = redact_uri(scrub(host.endpoint))
    data["credentials_ref"] = _credentials_ref(host.credentials_ref)
    data["custom"] = redact_mapping(host.custom)
    data["tags"] = [scrub(t) for t in host.tags]
    return data


def _check_dict(check: CheckResult) -> dict[str, Any]:
    return {
        "check": check.check,
        "grade": check.grade.value,
        "reason": scrub(check.reason),
        "evidence": redact_mapping(check.evidence),
    }


def _cell_dict(cell: CellResult) -> dict[str, Any]:
    return {
        "cell_id": cell.cell_id,
        "source": cell.source,
        "target": cell.target,
        "image": cell.image,
        "grade": cell.grade.value,
        "odca": ODCA_LABEL[cell.grade],
        "remedy": scrub(cell.remedy),
        "mismatches": cell.mismatches,
        "source_host": scrub(cell.source_host),
        "target_host": scrub(cell.target_host),
        "fingerprint": cell.fingerprint,
        "cached": cell.cached,
        "started_at": cell.started_at,
        "finished_at": cell.finished_at,
        "duration_s": round(cell_seconds(cell), 3),
        "checks": [_check_dict(c) for c in cell.checks],
        "predictions": [
            {"check": p.check, "grade": p.grade.value, "reason": scrub(p.reason), "rule": scrub(p.rule)}
            for p in cell.predictions
        ],
        "remediations": [
            {
                "name": scrub(r.name),
                "status": r.status,
                "cured": scrub(r.cured),
                "changed": scrub(r.changed),
                "evidence": redact_mapping(r.evidence),
            }
            for r in cell.remediations
        ],
        "stages": [{**asdict(s), "reason": scrub(s.reason)} for s in cell.stages],
        "artifacts": redact_mapping(cell.artifacts),
    }


def _tally_dict(t: Tally) -> dict[str, Any]:
    return {
        "cells": t.total,
        **{g.value: t.grades[g] for g in GRADES},
        "what_fixed_it": dict(t.remedies),
        "predictions": t.predicted,
        "predictions_missed": t.missed,
    }


def render_json(result: CampaignResult) -> str:
    """Everything: every cell with stages, evidence, predictions and remediations, plus the
    scorecard and root causes as the HTML shows them. ``parse_json`` reads it back."""
    sc = scorecard(result)
    doc = {
        "campaign_id": result.campaign_id,
        "name": scrub(result.name),
        "status": result.status,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "summary": {"cells": len(result.cells)} | {g.value: sc.overall.grades[g] for g in GRADES},
        "scorecard": {
            "overall": _tally_dict(sc.overall),
            "by_pair": [{"source": s, "target": t, **_tally_dict(v)} for (s, t), v in sc.by_pair.items()],
            "by_image": [{"image": i, **_tally_dict(v)} for i, v in sc.by_image.items()],
        },
        "root_causes": [
            {"grade": rc.grade.value, "reason": scrub(rc.reason), "checks": rc.checks, "cells": rc.cells}
            for rc in root_causes(result)
        ],
        "cells": [_cell_dict(c) for c in result.cells],
        "hosts": [_host_dict(h) for h in result.hosts],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def parse_json(text: str) -> CampaignResult:
    """A JSON report (``render_json``) back into a ``CampaignResult``: what ``--compare`` reads
    when the previous campaign is a file (a CI job keeps last night's JSON, not its workflow).
    Raises ValueError naming what is missing."""
    try:
        doc = json.loads(text)
        cells = [
            CellResult(
                cell_id=c["cell_id"],
                source=c["source"],
                target=c["target"],
                image=c["image"],
                checks=[
                    CheckResult(x["check"], Grade(x["grade"]), x.get("reason", ""), x.get("evidence", {}))
                    for x in c["checks"]
                ],
                stages=[StageRecord(**s) for s in c.get("stages", [])],
                source_host=c.get("source_host", ""),
                target_host=c.get("target_host", ""),
                fingerprint=c.get("fingerprint", ""),
                cached=bool(c.get("cached")),
                predictions=[
                    Prediction(p["check"], Grade(p["grade"]), p.get("reason", ""), p.get("rule", ""))
                    for p in c.get("predictions", [])
                ],
                remediations=[RemediationRecord(**r) for r in c.get("remediations", [])],
                remedy=c.get("remedy", ""),
                started_at=c.get("started_at", ""),
                finished_at=c.get("finished_at", ""),
                artifacts=c.get("artifacts", {}),
            )
            for c in doc["cells"]
        ]
        hosts = [Host(**h) for h in doc.get("hosts", [])]
        return CampaignResult(
            doc["campaign_id"],
            doc["name"],
            cells,
            hosts,
            status=doc.get("status", "completed"),
            started_at=doc.get("started_at", ""),
            finished_at=doc.get("finished_at", ""),
            summary=[
                CellSummary(c.cell_id, c.source, c.target, c.image, c.grade, c.cached, first_reason(c)) for c in cells
            ],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a crossvisor JSON report: {type(e).__name__}: {e}") from e


# --------------------------------------------------------------------------------------- JUnit


def check_seconds(cell: CellResult, check: str) -> float:
    """Time of the stage whose observation decided ``check`` (boot for boots, verify for disks...);
    when an earlier stage ended the cell (a failed import fails every check), that stage's time."""
    by_stage: dict[str, StageRecord] = {}
    for s in cell.stages:
        by_stage[s.stage] = s  # the last record of a stage is the attempt that counted
    deciding = by_stage.get(CHECK_STAGE.get(check, ""))
    if deciding is not None and deciding.status in ("ok", "fail"):
        return deciding.duration_s
    for s in cell.stages:
        if s.status in ("fail", "error"):
            return s.duration_s
    return deciding.duration_s if deciding else 0.0


def _junit_text(check: CheckResult) -> str:
    lines = []
    for k, v in redact_mapping(check.evidence).items():
        lines.append(f"{k}:\n{v}" if "\n" in v else f"{k}: {v}")
    return "\n".join(lines)


def render_junit(result: CampaignResult) -> str:
    """One testsuite per source->target pair, one testcase per image/check with the time of the
    stage that decided it. ``warn`` is a passed test case carrying the remedy as a property and in
    system-out; fail is a failure, error an error, skipped skipped."""
    root = ET.Element("testsuites", name=scrub(result.name), id=scrub(result.campaign_id))
    totals: Counter[str] = Counter()
    pairs: dict[tuple[str, str], list[CellResult]] = {}
    for cell in result.cells:
        pairs.setdefault((cell.source, cell.target), []).append(cell)

    for (source, target), cells in pairs.items():
        suite = ET.SubElement(root, "testsuite", name=scrub(f"{source}->{target}"))
        starts = sorted(t for t in (parse_time(c.started_at) for c in cells) if t)
        if starts:
            suite.set("timestamp", starts[0].strftime("%Y-%m-%dT%H:%M:%S"))
        counts: Counter[str] = Counter()
        for cell in cells:
            predicted = {p.check: p for p in cell.predictions}
            for check in cell.checks:
                counts["tests"] += 1
                case = ET.SubElement(
                    suite,
                    "testcase",
                    classname=scrub(f"crossvisor.{result.name}.{source}->{target}"),
                    name=scrub(f"{cell.image}/{check.check}"),
                    time=f"{check_seconds(cell, check.check):.3f}",
                )
                props = {
                    "cell": cell.cell_id,
                    "grade": check.grade.value,
                    "odca": ODCA_LABEL[check.grade],
                    "source_host": scrub(cell.source_host),
                    "target_host": scrub(cell.target_host),
                }
                if check.grade == Grade.WARN:
                    props["remedy"] = scrub(cell.remedy)
                p = predicted.get(check.check)
                if p is not None:
                    props |= {"predicted": p.grade.value, "prediction_rule": scrub(p.rule)}
                    props["prediction_held"] = str(agrees(p.grade, check.grade)).lower()
                pe = ET.SubElement(case, "properties")
                for k, v in props.items():
                    ET.SubElement(pe, "property", name=k, value=v)
                reason = scrub(check.reason) or check.grade.value
                if check.grade == Grade.FAIL:
                    counts["failures"] += 1
                    el = ET.SubElement(case, "failure", message=reason, type="interop")
                    el.text = _junit_text(check)
                elif check.grade == Grade.ERROR:
                    counts["errors"] += 1
                    el = ET.SubElement(case, "error", message=reason, type="infrastructure")
                    el.text = _junit_text(check)
                elif check.grade == Grade.SKIPPED:
                    counts["skipped"] += 1
                    ET.SubElement(case, "skipped", message=reason)
                elif check.grade == Grade.UNOBSERVABLE:
                    # JUnit knows no "no verdict": a skipped case, typed apart from a cell never reached
                    counts["skipped"] += 1
                    el = ET.SubElement(case, "skipped", message=f"unobservable: {reason}", type="unobservable")
                    el.text = _junit_text(check)
                elif check.grade == Grade.WARN:
                    out = ET.SubElement(case, "system-out")
                    out.text = (
                        f"warning (ODCA): works only after remediation {scrub(cell.remedy) or '(unnamed)'}\n"
                        f"{reason}\n{_junit_text(check)}"
                    ).strip()
        suite.set("tests", str(counts["tests"]))
        for key in ("failures", "errors", "skipped"):
            suite.set(key, str(counts[key]))
        suite.set("time", f"{sum(cell_seconds(c) for c in cells):.3f}")
        out = ET.SubElement(suite, "system-out")
        out.text = "\n".join(
            scrub(
                f"{c.image}: grade={c.grade.value} source_host={c.source_host} "
                f"target_host={c.target_host} cached={c.cached}"
                + (f" remedy={c.remedy}" if c.remedy else "")
                + " stages="
                + ", ".join(f"{s.stage}:{s.status}:{s.duration_s:.1f}s" for s in c.stages)
            )
            for c in cells
        )
        totals.update(counts)

    root.set("tests", str(totals["tests"]))
    for key in ("failures", "errors", "skipped"):
        root.set(key, str(totals[key]))
    root.set("time", f"{sum(cell_seconds(c) for c in result.cells):.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------------------------------- HTML


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


_PATH_PREFIX = "path:"


def _badge(grade: Grade | None, text: str | None = None) -> str:
    name = grade.value if grade else "none"
    label = text if text is not None else (name if grade else "\u2014")
    return f'<span class="badge g-{name}">{_a(label)}</span>'


def html_page(title: str, body: str, *, head: str = "") -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><link rel='icon' href='data:,'>"
        f"<title>{_e(title)}</title>{head}</head><body>{body}</body></html>\n"
    )


@lru_cache(maxsize=1)
def stylesheet() -> str:
    return resources.files("crossvisor").joinpath("web/static/crossvisor.css").read_text(encoding="utf-8")


def campaign_header(result: CampaignResult) -> str:
    span = span_seconds(result.started_at, result.finished_at)
    hosts = len(result.hosts)
    return (
        f"<h1>{_e(result.name)}</h1><p class='meta'>"
        f"<span>campaign <code>{_e(result.campaign_id)}</code></span>"
        f"<span>status <b data-status='{_a(result.status)}'>{_e(result.status)}</b></span>"
        f"<span>started <time datetime='{_e(result.started_at)}'>{_e(human_time(result.started_at))}</time></span>"
        f"<span>finished <time datetime='{_e(result.finished_at)}'>{_e(human_time(result.finished_at))}</time></span>"
        + (f"<span>took <b>{human_duration(span)}</b></span>" if span is not None else "")
        + f"<span>{len(result.cells)} cells on {hosts} host{'s' if hosts != 1 else ''}</span></p>"
    )


def _rate_bar(t: Tally) -> str:
    if not t.verdicts:
        return "<span class='muted'>no verdict</span>"
    p, w = t.share(Grade.PASS) or 0.0, t.share(Grade.WARN) or 0.0
    return (
        f"<span title='success {p:.0%}; with warnings {p + w:.0%} work'><span class='rate'>"
        f"<i class='w' style='width:{(p + w) * 100:.1f}%'></i><i style='width:{p * 100:.1f}%'></i></span> {p:.0%}</span>"
    )


def _remedies(t: Tally) -> str:
    return ", ".join(f"{_e(name)} &times;{n}" for name, n in t.remedies.most_common()) or "<span class='muted'>—</span>"


def _tally_row(label: str, t: Tally) -> str:
    def num(g: Grade) -> str:
        n = t.grades[g]
        return (
            f"<span class='g-{g.value}' data-count='{g.value}'>{n}</span>"
            if n
            else "<span class='muted'>&middot;</span>"
        )

    # ODCA's three tiers get a column each; error and skipped (no verdict) share one
    nums = "".join(
        f"<td class='num{f' g-{g.value}' if t.grades[g] else ''}' data-count='{g.value}'>{t.grades[g] or '&middot;'}</td>"
        for g in VERDICTS
    )
    nums += f"<td class='num small'>{num(Grade.ERROR)} / {num(Grade.SKIPPED)}</td>"
    pred = f"{t.predicted - t.missed}/{t.predicted}" if t.predicted else "—"
    if t.missed:
        pred = f"<span class='miss-flag' title='{t.missed} predictions missed'>{pred}</span>"
    return f"<tr><th>{label}</th>{nums}<td>{_rate_bar(t)}</td><td>{_remedies(t)}</td><td class='num'>{pred}</td></tr>"


def scorecard_html(result: CampaignResult, sc: Scorecard) -> str:
    o = sc.overall
    tiles = []
    for g in GRADES:
        share = o.share(g) if g in VERDICTS else None
        pct = f"<div class='p'>{share:.0%} of verdicts</div>" if share is not None else ""
        tiles.append(
            f"<div class='tile g-{g.value}' data-tile='{g.value}'><div class='n'>{o.grades[g]}</div>"
            f"<div class='l'>{ODCA_LABEL[g]}</div>{pct}</div>"
        )
    held = (
        f"Predictions held for {o.predicted - o.missed} of {o.predicted} checks"
        + (f" &mdash; <span class='miss-flag'>{o.missed} missed</span> (marked &ne; in the matrix)" if o.missed else "")
        if o.predicted
        else "No predictions recorded."
    )
    head = (
        "<tr><th></th>"
        + "".join(f"<th class='num'>{ODCA_LABEL[g]}</th>" for g in VERDICTS)
        + "<th class='num' title='no verdict: infrastructure error / skipped'>err / skip</th>"
        + "<th>pass rate</th><th>what fixed it</th><th class='num' title='predictions that held'>predicted</th></tr>"
    )
    pairs = "".join(_tally_row(f"{_e(s)} &rarr; {_e(t)}", v) for (s, t), v in sc.by_pair.items())
    images = "".join(_tally_row(f"<code>{_e(i)}</code>", v) for i, v in sc.by_image.items())
    return (
        "<div class='panel' id='scorecard'><h2>Scorecard</h2>"
        f"<div class='tiles'>{''.join(tiles)}</div><p class='small'>{held}</p>"
        f"<table class='scorecard' id='scorecard-pairs'><caption class='small muted'>cells per source &rarr; target pair</caption>{head}{pairs}</table>"
        f"<table class='scorecard' id='scorecard-images'><caption class='small muted'>cells per guest image</caption>{head}{images}</table>"
        "<p class='legend'>success: works unmodified &middot; warning: works after the named remediation &middot; "
        "failure: does not work &middot; error: infrastructure, no verdict &middot; pass rate: success among verdicts "
        "(lighter: with warnings)</p></div>"
    )


def _chip(cell: CellResult, grade: Grade, links: Links) -> str:
    miss = cell.mismatches
    title = f"{cell.image}: {grade.value.upper()}"
    if grade == Grade.WARN and cell.remedy:
        title += f" after {cell.remedy}"
    reason = first_reason(cell)
    if reason:
        title += f" \u2014 {reason[:120]}"
    if miss:
        title += f" (prediction missed: {', '.join(miss)})"
    cls = f"chip g-{grade.value}" + (" miss" if miss else "")
    return (
        f'<a class="{cls}" href="{_a(links.cell(cell.cell_id))}" data-cell="{_a(cell.cell_id)}" '
        f'data-grade="{grade.value}" data-image="{_e(cell.image)}" title="{_e(title[:300])}">'
        f"{_e(cell.image)}<b>{grade.value}</b></a>"
    )


def matrix_html(result: CampaignResult, links: Links) -> str:
    order = platform_order(result)
    images = image_order(result)
    rank = {im: i for i, im in enumerate(images)}
    by_pair: dict[tuple[str, str], list[CellResult]] = {}
    for c in result.cells:
        by_pair.setdefault((c.source, c.target), []).append(c)
    compact = len(images) > 4
    out = [
        "<div class='panel' id='matrix'><h2>Matrix</h2>",
        f"<table class='matrix{' chips-compact' if compact else ''}'><tr><th class='corner'>source&nbsp;&darr;<br>target&nbsp;&rarr;</th>",
        *(f"<th data-target='{_e(t)}'>{_e(t)}</th>" for t in order),
        "</tr>",
    ]
    for s in order:
        out.append(f"<tr><th data-source='{_e(s)}'>{_e(s)}</th>")
        for t in order:
            cells = sorted(by_pair.get((s, t), []), key=lambda c: rank[c.image])
            diag = " diag" if s == t else ""
            inner = "".join(_chip(c, c.grade, links) for c in cells)
            if not inner:
                inner = (
                    "<span class='same'>same platform</span>" if s == t else "<span class='muted small'>not run</span>"
                )
            out.append(f"<td class='pair{diag}' data-source='{_e(s)}' data-target='{_e(t)}'>{inner}</td>")
        out.append("</tr>")
    out.append("</table>")
    out.append(
        "<p class='legend'>"
        + " ".join(_badge(g) for g in GRADES)
        + " one entry per guest image; &ne; a prediction that missed; hatched: the diagonal (same platform). "
        "Each entry links to its cell.</p></div>"
    )
    return "".join(out)


def _hits(cell_ids: list[str], grade_of: dict[str, Grade], links: Links, limit: int = 24) -> str:
    chips = [
        f'<a class="hit g-{grade_of.get(cid, Grade.FAIL).value}" href="{_a(links.cell(cid))}" data-cell="{_a(cid)}">{_a(cid)}</a>'
        for cid in cell_ids
    ]
    if len(chips) <= limit:
        return "".join(chips)
    return (
        "".join(chips[:limit])
        + f"<details><summary>{len(chips) - limit} more</summary>{''.join(chips[limit:])}</details>"
    )


def root_causes_html(result: CampaignResult, causes: list[RootCause], links: Links) -> str:
    if not causes:
        return "<h2 id='causes'>Failures by root cause</h2><p>No failures and no infrastructure errors.</p>"
    grade_of = {c.cell_id: c.grade for c in result.cells}
    items = []
    for rc in causes:
        n = len(rc.cells)
        items.append(
            f"<li data-cause-cells='{n}'>{_badge(rc.grade)} <b>{n} cell{'s' if n != 1 else ''}</b> "
            f"<span class='muted small'>({', '.join(_a(c) for c in rc.checks)})</span><br>"
            f"<span class='why'>{_e(rc.reason)}</span><br>{_hits(rc.cells, grade_of, links)}</li>"
        )
    return f"<h2 id='causes'>Failures by root cause ({len(causes)})</h2><ol class='causes'>{''.join(items)}</ol>"


def _change_rows(changes: list[Change], links: Links) -> str:
    rows = []
    for ch in changes:
        href = links.cell(ch.cell_id) if ch.after is not None else None
        name = f"<a href='{_a(href)}'>{_a(ch.cell_id)}</a>" if href else _a(ch.cell_id)
        rows.append(
            f"<tr data-change-cell='{_a(ch.cell_id)}'><td>{name}</td><td>{_badge(ch.before)}</td><td>{_badge(ch.after)}</td>"
            f"<td class='small'>{_e(ch.reason_after or ch.reason_before)}</td></tr>"
        )
    return "".join(rows)


def comparison_html(cmp: Comparison, links: Links) -> str:
    blocks = []
    for title, key, changes in (
        ("New failures", "new", cmp.new_failures),
        ("Fixed", "fixed", cmp.fixed),
        ("Still failing", "still", cmp.still_failing),
        ("Other changes", "other", cmp.other_changes),
    ):
        if not changes:
            blocks.append(f"<h3 data-compare='{key}' data-count='0'>{title}: none</h3>")
            continue
        blocks.append(
            f"<h3 data-compare='{key}' data-count='{len(changes)}'>{title} ({len(changes)})</h3>"
            "<table><tr><th>cell</th><th>before</th><th>now</th><th>reason</th></tr>"
            + _change_rows(changes, links)
            + "</table>"
        )
    when = f", finished {_e(human_time(cmp.previous_finished))}" if cmp.previous_finished else ""
    return (
        f"<h2 id='compare'>Compared with <code>{_e(cmp.previous_id)}</code></h2>"
        f"<p class='meta'>{_e(cmp.previous_name)}{when}: {len(cmp.new_failures)} new failures, {len(cmp.fixed)} fixed, "
        f"{len(cmp.still_failing)} still failing, {len(cmp.other_changes)} other changes, {cmp.unchanged} unchanged.</p>"
        + "".join(blocks)
    )


# ---------------------------------------------------------------------------------------- charts
# Inline SVG drawn here: nothing to load, prints well, and works with scripts forbidden.

_STATUS_FILL = {"ok": "#43a047", "reused": "#81c784", "fail": "#d32f2f", "error": "#8e24aa", "skipped": "#bdbdbd"}
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#d62728",
)


def _rate_fill(rate: float) -> str:
    """Red (0 %) through amber to green (100 %), light enough to read dark text on."""
    stops = ((0.0, (239, 154, 154)), (0.5, (255, 224, 130)), (1.0, (165, 214, 167)))
    for (x0, c0), (x1, c1) in zip(stops, stops[1:]):
        if rate <= x1:
            f = (rate - x0) / (x1 - x0)
            return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(c0, c1))
    return "#a5d6a7"


def heatmap_svg(result: CampaignResult) -> str:
    """Pass rate per source -> target pair (rows) and check (columns), over the guest images."""
    checks = check_order(result)
    order = {p: i for i, p in enumerate(platform_order(result))}
    stats: dict[tuple[str, str], dict[str, Counter]] = {}
    for c in result.cells:
        per = stats.setdefault((c.source, c.target), {})
        for ch in c.checks:
            per.setdefault(ch.check, Counter())[ch.grade] += 1
        per.setdefault("\u2211 cell", Counter())[c.grade] += 1
    if not stats:
        return "<p class='muted'>No cells.</p>"
    cols = checks + ["\u2211 cell"]
    pairs = sorted(stats, key=lambda p: (order[p[0]], order[p[1]]))
    label_w, cw, ch_h, top = 150, 74, 22, 34
    width, height = label_w + cw * len(cols) + 4, top + ch_h * len(pairs) + 4
    out = [
        f'<svg class="chart" id="chart-heatmap" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="pass rate heatmap">'
    ]
    for j, col in enumerate(cols):
        out.append(f'<text x="{label_w + cw * j + cw / 2}" y="{top - 10}" text-anchor="middle">{_e(col)}</text>')
    for i, pair in enumerate(pairs):
        y = top + ch_h * i
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(pair[0])} \u2192 {_e(pair[1])}</text>')
        for j, col in enumerate(cols):
            cnt = stats[pair].get(col, Counter())
            verdicts = sum(cnt[g] for g in VERDICTS)
            x = label_w + cw * j
            tip = ", ".join(f"{g.value} {cnt[g]}" for g in CHECK_GRADES if cnt[g])
            if verdicts:
                rate = cnt[Grade.PASS] / verdicts
                fill, label = _rate_fill(rate), f"{rate:.0%}"
            elif cnt[Grade.UNOBSERVABLE]:
                fill, label = "#f3efe6", "unobs."
            else:
                fill, label = "#eeeeee", "n/a"
            out.append(
                f'<g><rect x="{x + 1}" y="{y + 1}" width="{cw - 2}" height="{ch_h - 2}" fill="{fill}" data-rate="{label}">'
                f"<title>{_e(pair[0])} \u2192 {_e(pair[1])}, {_e(col)}: {label} pass ({tip})</title></rect>"
                f'<text x="{x + cw / 2}" y="{y + 15}" text-anchor="middle">{label}</text></g>'
            )
    out.append("</svg>")
    return "".join(out)


def _stage_platform(cell: CellResult, stage: str) -> str:
    return cell.source if stage in SOURCE_STAGES else cell.target


def stage_durations_svg(result: CampaignResult) -> str:
    """Median (bar) and slowest (whisker) duration of each stage, one bar per platform that ran it
    (source-side stages count for the source platform, conversion onwards for the target)."""
    samples: dict[str, dict[str, list[float]]] = {}
    for c in result.cells:
        if c.cached:
            continue  # a reused result ran no stage now
        for s in c.stages:
            if s.status in ("skipped", "reused"):
                continue
            samples.setdefault(s.stage, {}).setdefault(_stage_platform(c, s.stage), []).append(s.duration_s)
    if not samples:
        return "<p class='muted'>No stage ran (every cell cached or skipped).</p>"
    stages = [s for s in STAGES if s in samples] + sorted(set(samples) - set(STAGES))
    platforms = [p for p in platform_order(result) if any(p in samples[s] for s in stages)]
    color = {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(platforms)}
    longest = max(max(v) for per in samples.values() for v in per.values()) or 1.0
    bar_h, gap, label_w, plot_w = 9, 8, 80, 560
    rows = sum(len(samples[s]) for s in stages)
    height = 30 + rows * bar_h + len(stages) * gap + 20
    width = label_w + plot_w + 90
    out = [
        f'<svg class="chart" id="chart-stages" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="stage durations">'
    ]
    for i, p in enumerate(platforms):  # legend
        out.append(
            f'<rect x="{label_w + i * 120}" y="4" width="10" height="10" fill="{color[p]}"/>'
            f'<text x="{label_w + i * 120 + 14}" y="13">{_e(p)}</text>'
        )
    y = 28
    for st in stages:
        per = samples[st]
        block = len(per) * bar_h
        out.append(f'<text x="{label_w - 6}" y="{y + block / 2 + 4}" text-anchor="end">{_a(st)}</text>')
        for p in platforms:
            if p not in per:
                continue
            vals = per[p]
            med, top = statistics.median(vals), max(vals)
            w, wt = plot_w * med / longest, plot_w * top / longest
            out.append(
                f'<g><rect x="{label_w}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h - 1}" fill="{color[p]}">'
                f"<title>{_a(st)} on {_e(p)}: median {human_duration(med)}, slowest {human_duration(top)}, {len(vals)} runs</title></rect>"
                f'<line x1="{label_w + w:.1f}" x2="{label_w + wt:.1f}" y1="{y + bar_h / 2 - 0.5}" y2="{y + bar_h / 2 - 0.5}" stroke="{color[p]}" stroke-width="1"/>'
                f'<line x1="{label_w + wt:.1f}" x2="{label_w + wt:.1f}" y1="{y + 1}" y2="{y + bar_h - 2}" stroke="{color[p]}"/></g>'
            )
            y += bar_h
        out.append(
            f'<text x="{label_w + plot_w + 6}" y="{y - block / 2 + 4}" class="small">{human_duration(max(max(v) for v in per.values()))}</text>'
        )
        y += gap
    out.append(f'<line class="axis" x1="{label_w}" x2="{label_w}" y1="24" y2="{y}"/>')
    out.append(
        f'<text x="{label_w}" y="{y + 12}">0</text><text x="{label_w + plot_w}" y="{y + 12}" text-anchor="end">{human_duration(longest)}</text>'
    )
    out.append("</svg>")
    return "".join(out)


_NICE_STEPS = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
)


def _tick_label(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"+{s} s"
    if s < 3600:
        return f"+{s // 60} min"
    if s < 86400:
        return f"+{s // 3600} h" + (f" {s % 3600 // 60:02d}" if s % 3600 else "")
    return f"+{s // 86400} d" + (f" {s % 86400 // 3600} h" if s % 86400 else "")


def _lanes(spans: list[tuple[datetime, datetime, CellResult]]) -> list[int]:
    """Interval partitioning: each cell on the first lane free at its start, so the number of lanes
    is the campaign's peak concurrency and a gap in a lane is a slot that sat idle."""
    ends: list[datetime] = []
    lanes = []
    for start, end, _ in spans:
        for i, e in enumerate(ends):
            if e <= start:
                ends[i] = end
                lanes.append(i)
                break
        else:
            ends.append(end)
            lanes.append(len(ends) - 1)
    return lanes


def timeline_svg(result: CampaignResult, links: Links) -> str:
    """The campaign as a Gantt chart: one bar per cell from its start to its finish, coloured by
    grade, packed onto as many lanes as ran at once; each bar links to its cell."""
    spans = []
    for c in result.cells:
        a, b = parse_time(c.started_at), parse_time(c.finished_at)
        if a and b and b >= a:
            spans.append((a, b, c))
    if not spans:
        return "<p class='muted'>No cell recorded its start and finish times.</p>"
    spans.sort(key=lambda x: (x[0], x[1]))
    lanes = _lanes(spans)
    t0 = min(s[0] for s in spans)
    total = max((s[1] - t0).total_seconds() for s in spans) or 1.0
    n_lanes = max(lanes) + 1
    lane_h = 14 if n_lanes <= 40 else 8
    label_w, plot_w = 60, 1100
    height = 24 + n_lanes * lane_h + 26
    width = label_w + plot_w + 20
    out = [
        f'<svg class="chart" id="chart-timeline" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="campaign timeline">'
    ]
    step = next((s for s in _NICE_STEPS if total / s <= 10), _NICE_STEPS[-1])
    tick = 0.0
    while tick <= total + 1e-9:
        x = label_w + plot_w * tick / total
        out.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="18" y2="{height - 22}" stroke-dasharray="2,3"/>'
            f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{_tick_label(tick)}</text>'
        )
        tick += step
    out.append(f'<text x="0" y="12">slot</text><text x="{label_w}" y="12">from {_a(human_time(t0.isoformat()))}</text>')
    for lane in range(n_lanes):
        if n_lanes <= 40:
            out.append(
                f'<text x="{label_w - 8}" y="{24 + lane * lane_h + lane_h - 4}" text-anchor="end">{lane + 1}</text>'
            )
    for (a, b, c), lane in zip(spans, lanes):
        x = label_w + plot_w * (a - t0).total_seconds() / total
        w = max(plot_w * (b - a).total_seconds() / total, 1.5)
        y = 24 + lane * lane_h
        g = c.grade
        tip = f"{c.cell_id}: {g.value}, {human_duration((b - a).total_seconds())}" + (" (cached)" if c.cached else "")
        out.append(
            f'<a href="{_a(links.cell(c.cell_id))}"><rect class="b-{g.value}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{lane_h - 2}"><title>{_e(tip)}</title></rect></a>'
        )
    out.append("</svg>")
    return "".join(out)


def stage_timeline_html(cell: CellResult) -> str:
    """One cell's stages left to right, width by duration (gaps where the start times recorded
    one), coloured by status; a retried stage says how many attempts it took. Plain boxes, not
    SVG: a 2,000-cell report draws 22,000 of them."""
    if not cell.stages:
        return "<p class='muted small'>No stage records (result rebuilt from the campaign summary).</p>"
    starts = [parse_time(s.started_at) for s in cell.stages]
    t0 = min((t for t in starts if t), default=None)
    pos, cursor = [], 0.0
    for s, t in zip(cell.stages, starts):
        begin = (t - t0).total_seconds() if t and t0 else cursor
        pos.append((max(begin, cursor), s.duration_s))
        cursor = max(cursor, begin + s.duration_s)
    total = max(b + d for b, d in pos) or 1.0
    out = ["<div class='stagebar' role='img' aria-label='stage timeline'>"]
    at = 0.0
    for s, (begin, dur) in zip(cell.stages, pos):
        if begin - at > total / 500:  # idle time between stages (waiting for a slot or a lease)
            out.append(f"<i class='gap' style='flex:{begin - at:.3g}'></i>")
        at = begin + dur
        status = s.status if s.status in _STATUS_FILL else "other"
        tries = f" \u00d7{s.attempts}" if s.attempts > 1 else ""
        tip = f"{s.stage}: {s.status}, {human_duration(dur)}{tries}"
        label = s.stage + tries if dur / total > 0.06 else ""
        out.append(f"<i class='s-{status}' style='flex:{max(dur, total / 400):.3g}' title='{_e(tip)}'>{_a(label)}</i>")
    out.append(f"</div><div class='stageaxis'><span>0</span><span>{human_duration(total)}</span></div>")
    return "".join(out)


def charts_html(result: CampaignResult, links: Links) -> str:
    return (
        "<h2 id='charts'>Charts</h2><div class='charts'>"
        f"<figure>{heatmap_svg(result)}<figcaption>Pass rate (success among verdicts) per source &rarr; target pair "
        "and check, over the guest images; &sum; cell is the cell's overall grade.</figcaption></figure>"
        f"<figure>{stage_durations_svg(result)}<figcaption>Stage durations: median bar, slowest whisker, per platform "
        "(export side: the source platform; conversion onwards: the target).</figcaption></figure>"
        f"<figure class='wide'>{timeline_svg(result, links)}<figcaption>The campaign over time: one bar per cell, "
        "coloured by grade, on as many slots as ran at once. Click a bar for its cell.</figcaption></figure>"
        "</div>"
    )


# ------------------------------------------------------------------------------------ cell detail


def _evidence_html(evidence: dict[str, str], skip: Iterable[str] = ()) -> str:
    """Short facts inline ("key value · key value"), multi-line values as blocks, ``path:``
    values as links when they stay relative; secret-named keys never show their value."""
    inline, blocks = [], []
    for key, value in evidence.items():
        if key in skip:
            continue
        if is_secret_key(key):
            inline.append(f"<span class='kv'><i>{_e(key)}</i> {REDACTED}</span>")
            continue
        value = str(value)
        rel = safe_relative(value[len(_PATH_PREFIX) :]) if value.startswith(_PATH_PREFIX) else None
        if rel is not None:
            inline.append(f"<span class='kv'><i>{_e(key)}</i> <a href='{_e(quote(rel))}'>{_e(rel)}</a></span>")
        elif "\n" in value:
            blocks.append(f"<div class='kv'><i>{_e(key)}</i><pre class='console'>{_e(value)}</pre></div>")
        else:
            inline.append(f"<span class='kv'><i>{_e(key)}</i> {_e(value)}</span>")
    return (f"<div class='ev'>{''.join(inline)}</div>" if inline else "") + "".join(blocks)


def distinct_consoles(cell: CellResult) -> list[tuple[list[str], str]]:
    """Distinct console excerpts and the checks that carry each: a failed stage hands the same
    console to every check, and it is shown once."""
    seen: dict[str, list[str]] = {}
    for ch in cell.checks:
        text = ch.evidence.get("console")
        if text:
            seen.setdefault(text, []).append(ch.check)
    return [(checks, text) for text, checks in seen.items()]


def _prediction_html(p: Prediction | None, observed: Grade) -> str:
    if p is None:
        return "<span class='muted'>\u2014</span>"
    rule = f" <span class='small muted'>{_e(p.rule)}</span>" if p.rule else ""
    if not agrees(p.grade, observed):
        why = f"<div class='small muted'>{_e(p.reason)}</div>" if p.reason else ""
        return f"{_badge(p.grade)} <span class='miss-flag' title='prediction missed'>&ne; missed</span>{rule}{why}"
    if p.grade == observed:
        return f"<span class='muted small' title='{_e(p.rule)}'>as predicted</span>"
    return f"{_badge(p.grade)}{rule}"


def _shared_evidence(cell: CellResult) -> dict[str, str]:
    """Facts every check of the cell carries with the same value (hosts, say): shown once."""
    with_ev = [ch.evidence for ch in cell.checks if ch.evidence]
    if len(with_ev) < 2:
        return {}
    first = with_ev[0]
    return {k: v for k, v in first.items() if k != "console" and all(ev.get(k) == v for ev in with_ev[1:])}


def _notable_stages(cell: CellResult) -> str:
    """Stages worth a line: failed, errored, retried or skipped for a reason."""
    items = []
    for s in cell.stages:
        if s.status in ("fail", "error") or s.attempts > 1 or (s.reason and s.status != "skipped"):
            tries = f" after {s.attempts} attempts" if s.attempts > 1 else ""
            items.append(
                f"<li>{_status_badge(s.status)} <b>{_a(s.stage)}</b>{tries}, {human_duration(s.duration_s)}"
                + (f": {_e(s.reason)}" if s.reason else "")
                + "</li>"
            )
    skipped = [s.stage for s in cell.stages if s.status == "skipped"]
    if skipped:
        items.append(f"<li>{_status_badge('skipped')} {', '.join(_a(x) for x in skipped)}</li>")
    return f"<ul class='notes'>{''.join(items)}</ul>" if items else ""


def cell_detail_html(cell: CellResult, links: Links, *, heading: str = "h3") -> str:
    """Everything about one cell: what ran where and when, the stage timeline, every check with
    its prediction, reason and evidence, the console, the remediation ladder and the artifacts."""
    g = cell.grade
    predicted = {p.check: p for p in cell.predictions}
    facts = [
        f"<span><b>{_e(cell.source_host or '?')}</b> &rarr; <b>{_e(cell.target_host or '?')}</b></span>",
        f"<span>started <time datetime='{_e(cell.started_at)}'>{_e(human_time(cell.started_at))}</time></span>",
        f"<span>took <b>{human_duration(cell_seconds(cell))}</b></span>",
    ]
    if cell.cached:
        facts.append("<span><b>cached</b>: result reused from an identical earlier run</span>")
    if cell.fingerprint:
        facts.append(f"<span>fingerprint <code>{_e(cell.fingerprint[:12])}</code></span>")
    out = [
        f"<section class='cell' id='{_a(cell_anchor(cell.cell_id))}' data-cell='{_a(cell.cell_id)}' data-grade='{g.value}'>",
        f"<{heading}>{_badge(g)} {_e(cell.source)} &rarr; {_e(cell.target)} &middot; <code>{_e(cell.image)}</code> "
        f"<span class='muted small'>{_a(cell.cell_id)}</span></{heading}><p class='meta'>{''.join(facts)}</p>",
    ]
    if g == Grade.WARN:
        out.append(
            f"<p class='notice'>Works only after remediation <b>{_e(cell.remedy or 'unnamed')}</b> (ODCA warning).</p>"
        )
    out.append(stage_timeline_html(cell))
    out.append(_notable_stages(cell))
    shared = _shared_evidence(cell)
    has_pred = bool(cell.predictions)  # no prediction column for a cell the rules said nothing about
    out.append(
        "<table class='checks'><tr><th>check</th><th>observed</th>"
        + ("<th>predicted</th>" if has_pred else "")
        + "<th>reason and evidence</th></tr>"
    )
    # checks with the same grade, reason and prediction share one row (a failed import fails all
    # seven with one reason: one line, each check's own evidence inside it)
    rows: dict[tuple[str, str, str], list[CheckResult]] = {}
    for ch in cell.checks:
        rows.setdefault((ch.grade.value, ch.reason, _prediction_html(predicted.get(ch.check), ch.grade)), []).append(ch)
    for (grade, reason, pred), group in rows.items():
        names = " ".join(ch.check for ch in group)
        evidence = []
        for ch in group:
            ev = _evidence_html(ch.evidence, skip=("console", *shared))
            if ev:
                evidence.append(f"<div class='ev-of'><b>{_a(ch.check)}</b> {ev}</div>" if len(group) > 1 else ev)
        out.append(
            f"<tr data-checks='{_a(names)}' data-grade='{grade}'><th>{_a(', '.join(ch.check for ch in group))}</th>"
            f"<td>{_badge(Grade(grade))}</td>{f'<td>{pred}</td>' if has_pred else ''}"
            f"<td>{f'<div>{_e(reason)}</div>' if reason else ''}{''.join(evidence)}</td></tr>"
        )
    if shared:
        span = 3 if has_pred else 2
        out.append(
            f"<tr><th class='muted small'>every check</th><td colspan='{span}'>{_evidence_html(shared)}</td></tr>"
        )
    out.append("</table>")
    for checks, text in distinct_consoles(cell):
        opened = " open" if g not in (Grade.PASS, Grade.SKIPPED) else ""
        out.append(
            f"<details class='console'{opened}><summary>console excerpt ({', '.join(_a(c) for c in checks)}, "
            f"{text.count(chr(10)) + 1} lines)</summary><pre class='console'>{_e(text)}</pre></details>"
        )
    console_href = links.console(cell)
    if console_href:
        out.append(f"<p class='small'><a href='{_a(console_href)}' download>download the console excerpts</a></p>")
    if cell.remediations:
        out.append(
            "<h4>Remediation ladder</h4><table class='remediations'><tr><th>#</th><th>remediation</th><th>status</th>"
            "<th>cured</th><th>changed</th><th>evidence</th></tr>"
        )
        for i, r in enumerate(cell.remediations, 1):
            st = {"cured": Grade.PASS, "not-cured": Grade.FAIL, "failed": Grade.FAIL}.get(r.status, Grade.SKIPPED)
            out.append(
                f"<tr data-remedy='{_e(r.name)}'><td class='num'>{i}</td><td><b>{_e(r.name)}</b></td><td>{_badge(st, r.status)}</td>"
                f"<td class='small'>{_e(r.cured)}</td><td class='small'>{_e(r.changed)}</td>"
                f"<td>{_evidence_html(r.evidence)}</td></tr>"
            )
        out.append("</table>")
    if cell.artifacts:
        items = []
        for name, path in cell.artifacts.items():
            href = links.artifact(cell, name)
            shown = f"<a href='{_a(href)}'>{_e(name)}</a>" if href else f"<b>{_e(name)}</b>"
            items.append(f"<li>{shown} <span class='muted small'>{_e(path)}</span></li>")
        out.append(f"<p class='small'>Artifacts:</p><ul class='artifacts small'>{''.join(items)}</ul>")
    out.append("</section>")
    return "".join(out)


def _status_badge(status: str) -> str:
    grade = {"ok": Grade.PASS, "reused": Grade.PASS, "fail": Grade.FAIL, "error": Grade.ERROR, "skipped": Grade.SKIPPED}
    return _badge(grade.get(status), status)


def inventory_html(result: CampaignResult) -> str:
    rows = []
    for host in result.hosts:
        h = _host_dict(host)
        custom = ", ".join(f"{k}={v}" for k, v in h["custom"].items())
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(h[k]))}</td>" for k in ("name", "kind", "driver", "endpoint", "site", "version")
            )
            + f"<td>{html.escape(', '.join(h['tags']))}</td><td class='num'>{host.cpus}</td><td class='num'>{host.memory_mib}</td>"
            f"<td class='num'>{host.slots}</td><td>{html.escape(h['status'])}</td><td>{html.escape(h['credentials_ref'])}</td>"
            f"<td>{html.escape(custom)}</td></tr>"
        )
    return (
        f"<details id='inventory'><summary>Inventory snapshot ({len(result.hosts)} hosts)</summary>"
        "<table><tr><th>name</th><th>kind</th><th>driver</th><th>endpoint</th><th>site</th><th>version</th><th>tags</th>"
        "<th>cpus</th><th>memory MiB</th><th>slots</th><th>status</th><th>credentials</th><th>custom</th></tr>"
        + "".join(rows)
        + "</table></details>"
    )


def campaign_body(
    result: CampaignResult, links: Links, previous: CampaignResult | None = None, *, after_header: str = ""
) -> str:
    """The campaign overview both the report and the web UI show: scorecard beside the matrix,
    root causes, comparison, charts, inventory. ``after_header``: HTML the web UI puts under the
    title (links, live progress)."""
    sc = scorecard(result)
    parts = [
        campaign_header(result),
        after_header,
        f"<div class='layout'>{matrix_html(result, links)}{scorecard_html(result, sc)}</div>",
        root_causes_html(result, root_causes(result), links),
    ]
    if previous is not None:
        parts.append(comparison_html(compare(result, previous), links))
    parts.append(charts_html(result, links))
    parts.append(inventory_html(result))
    return "".join(parts)


_REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_html(
    result: CampaignResult, previous: CampaignResult | None = None, *, artifact_base: str | None = None
) -> str:
    """A single self-contained page (inline CSS and SVG, no scripts, no external assets): the
    overview, then one detail section per cell that the matrix, root causes and timeline link to.
    ``previous``: an earlier campaign of the same spec to compare with. ``artifact_base``: URL of
    CROSSVISOR_HOME relative to where the file will live, to link artifacts."""
    links = file_links(artifact_base)
    body = [
        f"<main>{campaign_body(result, links, previous)}",
        f"<h2 id='cells'>Cells ({len(result.cells)})</h2>",
        *(cell_detail_html(c, links) for c in result.cells),
        "</main>",
    ]
    head = (
        # no network access from the page at all, even if a hostile string slipped through
        f"<meta http-equiv='Content-Security-Policy' content=\"{_REPORT_CSP}\"><style>{stylesheet()}</style>"
    )
    return html_page(f"crossvisor report: {result.name}", "".join(body), head=head)
