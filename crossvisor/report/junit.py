"""The JUnit XML report: a test case per image and check, for CI dashboards."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

from crossvisor.core.timefmt import parse_time
from crossvisor.report.analysis import CHECK_STAGE, ODCA_LABEL, cell_seconds
from crossvisor.report.redaction import redact_mapping, scrub
from domain.model import (
    CampaignResult,
    CellResult,
    CheckResult,
    Grade,
    StageRecord,
    agrees,
    unmodified,
)

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
                    props["prediction_held"] = str(agrees(p.grade, unmodified(check))).lower()
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
