"""One cell as ``campaign show ID CELL`` prints it: stage timeline, checks with evidence, the
console excerpt and artifact paths (absolute, under CROSSVISOR_HOME)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossvisor.client.formats import duration_text
from domain.matrix import human_id


def cell_document(cell, home: Path, console_lines: int = 20) -> dict[str, Any]:
    console = ""
    for k in cell.checks:
        if k.evidence.get("console"):
            console = k.evidence["console"]
            break
    artifacts = {}
    for name, rel in sorted(cell.artifacts.items()):
        p = (home / rel).resolve()
        artifacts[name] = {"path": str(p), "exists": p.exists()}
    return {
        "cell": human_id(cell.source, cell.target, cell.image),
        "cell_id": cell.cell_id,
        "grade": cell.grade.value,
        "cached": cell.cached,
        "remedy": cell.remedy,
        "source_host": cell.source_host,
        "target_host": cell.target_host,
        "fingerprint": cell.fingerprint,
        "started_at": cell.started_at,
        "finished_at": cell.finished_at,
        "stages": [
            {
                "stage": s.stage,
                "status": s.status,
                "duration_s": s.duration_s,
                "attempts": s.attempts,
                "started_at": s.started_at,
                "round": s.round,
                "remedy": s.remedy,
                "reason": s.reason,
            }
            for s in cell.stages
        ],
        "checks": [
            {
                "check": k.check,
                "grade": k.grade.value,
                "reason": k.reason,
                "evidence": {n: v for n, v in k.evidence.items() if n != "console"},
            }
            for k in cell.checks
        ],
        "predictions": [
            {"check": p.check, "grade": p.grade.value, "reason": p.reason, "rule": p.rule} for p in cell.predictions
        ],
        "console": console.splitlines()[-console_lines:] if console else [],
        "artifacts": artifacts,
    }


def format_cell(d: dict[str, Any]) -> str:
    out = [f"{d['cell']}  {d['grade'].upper()}" + (" (cached)" if d["cached"] else "") + f"   id {d['cell_id']}"]
    if d["source_host"] or d["target_host"]:
        out.append(f"hosts: {d['source_host'] or '?'} -> {d['target_host'] or '?'}")
    if d["started_at"]:
        out.append(f"ran: {d['started_at']} .. {d['finished_at']}")
    if d["remedy"]:
        out.append(f"works after remedy: {d['remedy']}")
    if d["stages"]:
        out.append("stages:")
        w = max(len(s["stage"] + (f"[{s['remedy']}]" if s["remedy"] else "")) for s in d["stages"])
        for s in d["stages"]:
            name = s["stage"] + (f"[{s['remedy']}]" if s["remedy"] else "")
            extra = f" x{s['attempts']}" if s["attempts"] > 1 else ""
            reason = f"  {s['reason']}" if s["reason"] else ""
            out.append(f"  {name:<{w}}  {s['status']:<7} {duration_text(s['duration_s']):>7}{extra}{reason}")
    else:
        out.append("stages: none recorded (cached, skipped before running, or the result store is elsewhere)")
    out.append("checks:")
    for k in d["checks"]:
        out.append(f"  {k['check']:<12} {k['grade'].upper():<7} {k['reason']}")
        for n, v in k["evidence"].items():
            out.append(f"      {n}: {v}")
    if d["console"]:
        out.append(f"console (last {len(d['console'])} lines):")
        out += [f"  | {line}" for line in d["console"]]
    if d["artifacts"]:
        out.append("artifacts:")
        for n, a in d["artifacts"].items():
            out.append(f"  {n}: {a['path']}" + ("" if a["exists"] else "  (missing here)"))
    return "\n".join(out)
