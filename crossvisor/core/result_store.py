"""Full cell results on disk, shared by the worker (writes) and the CLI (reads).

    <home>/results/<fingerprint>.json              passed results, reused by any identical cell
    <home>/results/campaigns/<campaign>/<cell>.json every result a campaign stored (latest attempt)

The campaign workflow itself keeps only a short outcome per cell (see ``CellOutcome``): full
results with stages and evidence would push its state and its return value past Temporal's
payload limits on a month-long matrix. A report joins the workflow's summary with this store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

from temporalio.converter import value_to_type

from domain.model import CampaignResult, CellResult, CellSummary, CheckResult, Grade

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def results_dir(home: Path) -> Path:
    return home / "results"


def campaign_dir(home: Path, campaign_id: str) -> Path:
    return results_dir(home) / "campaigns" / _UNSAFE.sub("_", campaign_id)


def write_atomic(path: Path, result: CellResult) -> None:
    """Readers never see half a file: a killed worker leaves either the old or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(result), default=str))
    tmp.replace(path)


def read(path: Path) -> CellResult | None:
    try:
        return value_to_type(CellResult, json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def save(home: Path, campaign_id: str, result: CellResult) -> None:
    write_atomic(campaign_dir(home, campaign_id) / f"{result.cell_id}.json", result)


def _from_summary(row: CellSummary, note: str) -> CellResult:
    evidence = {"note": note} if note else {}
    return CellResult(
        cell_id=row.cell_id,
        source=row.source,
        target=row.target,
        image=row.image,
        checks=[CheckResult("cell", row.grade, row.reason, evidence)],
        stages=[],
        cached=row.cached,
    )


def attach(result: CampaignResult, home: Path) -> CampaignResult:
    """Fill ``result.cells`` from the store, in summary order. A cell the store lacks (the
    campaign skipped it before it ran, or this machine is not the worker's) is rebuilt from its
    summary row, so a report always covers the whole matrix."""
    folder = campaign_dir(home, result.campaign_id)
    cells = []
    for row in result.summary:
        full = read(folder / f"{row.cell_id}.json")
        if full is not None and full.grade == row.grade:
            cells.append(full)
            continue
        # skipped before running is expected to have no record; anything else is worth a note
        note = "" if row.grade == Grade.SKIPPED else f"full result not found under {folder}"
        cells.append(_from_summary(row, note))
    result.cells = cells
    return result
