"""The result store joins the workflow's per-cell summary with the full results on disk."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.converter import DataConverter

from crossvisor.core import result_store
from domain.messages import CampaignState
from domain.model import (
    REASON_KEPT,
    CampaignResult,
    CellOutcome,
    CellResult,
    CellSummary,
    CheckResult,
    Grade,
    StageRecord,
)


def _result(cell_id: str, grade: Grade, reason: str = "") -> CellResult:
    return CellResult(
        cell_id=cell_id,
        source="kvm",
        target="xen",
        image="img",
        checks=[CheckResult("boots", Grade.PASS), CheckResult("nics", grade, reason, {"console": "tail"})],
        stages=[StageRecord("reserve", "ok", 0.1), StageRecord("import", "fail" if grade == Grade.FAIL else "ok")],
        source_host="kvm-1",
        target_host="xen-1",
    )


def _row(r: CellResult) -> CellSummary:
    o = CellOutcome.of(r)
    return CellSummary(r.cell_id, r.source, r.target, r.image, o.grade, o.cached, o.reason)


def test_attach_prefers_the_store_and_rebuilds_what_it_lacks(tmp_path: Path) -> None:
    stored = _result("a", Grade.FAIL, "e1000 not offered by the target")
    result_store.save(tmp_path, "camp/1", stored)  # a "/" in the id must not escape the folder
    lost = _result("b", Grade.FAIL, "disk changed")
    res = CampaignResult(
        campaign_id="camp/1",
        name="n",
        summary=[
            _row(stored),
            _row(lost),  # never stored (e.g. the CLI runs on another machine)
            CellSummary("c", "kvm", "xen", "img2", Grade.SKIPPED, reason="skipped by operator"),
        ],
    )
    cells = {c.cell_id: c for c in result_store.attach(res, tmp_path).cells}
    assert list(cells) == ["a", "b", "c"]
    assert cells["a"] == stored  # stages and evidence come back whole
    assert cells["b"].grade == Grade.FAIL and cells["b"].stages == []
    assert cells["b"].checks[0].reason == "nics: disk changed"
    assert "full result not found" in cells["b"].checks[0].evidence["note"]
    assert cells["c"].grade == Grade.SKIPPED and cells["c"].checks[0].evidence == {}
    assert list((tmp_path / "results" / "campaigns").iterdir()) == [tmp_path / "results" / "campaigns" / "camp_1"]


def test_a_stale_store_entry_does_not_override_the_summary(tmp_path: Path) -> None:
    result_store.save(tmp_path, "c1", _result("a", Grade.FAIL, "old attempt"))
    res = CampaignResult("c1", "n", summary=[CellSummary("a", "kvm", "xen", "img", Grade.PASS)])
    (cell,) = result_store.attach(res, tmp_path).cells
    assert cell.grade == Grade.PASS and "full result not found" in cell.checks[0].evidence["note"]


def test_outcome_from_json_equals_outcome_from_the_dataclass() -> None:
    r = _result("a", Grade.FAIL, "x" * 1000)
    doc = json.loads(DataConverter.default.payload_converter.to_payloads([r])[0].data)
    assert CellOutcome.of_json(doc) == CellOutcome.of(r)
    assert len(CellOutcome.of(r).reason) == REASON_KEPT


def test_carried_state_is_small_per_cell() -> None:
    outcomes = {f"kvm-{i}--xen-{i % 7}--image-{i % 40}": CellOutcome(Grade.FAIL, False, "r" * 60) for i in range(2000)}
    st = CampaignState(done=outcomes, pending=[], attempts={k: 1 for k in outcomes})
    size = len(DataConverter.default.payload_converter.to_payloads([st])[0].data)
    assert size < 2000 * 200, size  # a full CellResult was ~4 KB per cell
