"""The JSON report (``crossvisor report --json``): everything, redacted; ``parse_json`` reads it back
(``--compare`` with a file)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from crossvisor.core.redact import redact_uri
from crossvisor.report.analysis import GRADES, ODCA_LABEL, Tally, cell_seconds, first_reason, root_causes, scorecard
from crossvisor.report.redaction import _credentials_ref, redact_mapping, scrub
from domain.model import (
    CampaignResult,
    CellResult,
    CellSummary,
    CheckResult,
    Grade,
    Host,
    Prediction,
    RemediationRecord,
    StageRecord,
)

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
