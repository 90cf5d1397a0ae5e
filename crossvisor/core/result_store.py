"""Full cell results on disk, shared by the worker (writes) and the CLI (reads).

    <home>/results/<fingerprint>.json              passed results, reused by any identical cell
    <home>/results/campaigns/<campaign>/<cell>.json every result a campaign stored (latest attempt)

The campaign workflow itself keeps only a grade code and a short reason per cell: full results
with stages and evidence would push its state and its return value past Temporal's payload limits
on a month-long matrix. Its result (and its ``snapshot`` query) carries them compactly
(``CampaignResult.shape`` + ``book``, ~2 bytes per cell); ``summary_rows`` lists one row per
finished cell from them (or from ``summary``, which results of replay sets v2-v4 carry) and
``attach`` joins those rows with this store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

from temporalio.converter import value_to_type

from domain.cellbook import CellBook, shape_cells
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


def stored_results(home: Path, campaign_id: str) -> list[CellResult]:
    """Every result the campaign stored, by cell id (what is left of a campaign that failed or
    was terminated and so has no result to read)."""
    folder = campaign_dir(home, campaign_id)
    found = (read(p) for p in sorted(folder.glob("*.json"))) if folder.is_dir() else ()
    return [r for r in found if r is not None]


def summary_rows(result: CampaignResult) -> list[CellSummary]:
    """One row per finished cell, in matrix order: decoded from ``result.shape`` and
    ``result.book`` (a v5 campaign's result or snapshot), else ``result.summary`` (older ones)."""
    if result.shape is not None and result.book:
        cells = shape_cells(result.shape)
        book = CellBook.decode([c[0] for c in cells], result.book)
        return list(book.rows({cid: (s, t, i) for cid, s, t, i in cells}))
    return list(result.summary)


def attach(result: CampaignResult, home: Path) -> CampaignResult:
    """Fill ``result.cells`` from the store and ``result.summary`` with ``summary_rows``, in
    matrix order. A cell the store lacks (the campaign skipped it before it ran, or this machine
    is not the worker's) is rebuilt from its row, so a report always covers the whole matrix."""
    folder = campaign_dir(home, result.campaign_id)
    cells = []
    result.summary = summary_rows(result)
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
