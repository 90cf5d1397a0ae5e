"""What a campaign's result says, before any format: orders of platforms, images and checks, the
ODCA-style tallies and scorecard, failures grouped by root cause, the comparison with a previous
campaign. Pure: the renderers (JSON, JUnit, HTML) and the terminal read these."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from crossvisor.core.timefmt import span_seconds
from domain.model import (
    CHECKS,
    CampaignResult,
    CellResult,
    Grade,
    agrees,
    unmodified,
)

# ----------------------------------------------------------------------------- time, durations


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
        observed = {c.check: unmodified(c) for c in cell.checks}
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
