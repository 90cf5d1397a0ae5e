"""How a campaign's numbers read, the same in every command and the web UI: durations (the one
format, ``crossvisor.core.timefmt``, compact in terminal columns), the ETA and the counts."""

from __future__ import annotations

from typing import Any

from crossvisor.core.timefmt import human_duration

GRADE_NAMES = ("pass", "warn", "fail", "error", "skipped")


def duration_text(seconds: float | None) -> str:
    """A duration in a terminal column ('4m05s', '6h27m'; '-' when unknown)."""
    return human_duration(seconds, compact=True)


def counts_text(c: dict[str, int]) -> str:
    grades = ", ".join(f"{g} {c.get(g, 0)}" for g in GRADE_NAMES)
    return f"{c.get('done', 0)}/{c.get('total', 0)} done ({grades}), {c.get('running', 0)} running, {c.get('pending', 0)} pending"


def eta_text(doc: dict[str, Any]) -> str:
    """', ETA ~6h27m' for a running campaign's snapshot (``reading.snapshot``); why there is none
    when it is paused or stalled; '' once it has ended."""
    if doc.get("workflow_status") != "running":
        return ""
    if doc.get("paused"):
        return ", ETA: paused"
    if doc.get("stall_reason"):
        return ", ETA: stalled"
    if doc.get("eta_s") is None:
        return ""
    basis = " (model: no cell finished yet)" if doc.get("eta_basis") == "model" else ""
    return f", ETA ~{duration_text(doc['eta_s'])}{basis}"


def age_text(doc: dict[str, Any]) -> str:
    """'age 4m05s, ETA ~6h27m': how long the campaign has run and how long it still may."""
    return f"age {duration_text(doc.get('age_s'))}{eta_text(doc)}"
