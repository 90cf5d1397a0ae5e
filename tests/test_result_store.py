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


def _book_result(tmp_path: Path) -> tuple[CampaignResult, list[CellResult]]:
    """A v5 campaign result: no row per cell, the cells in ``shape`` order and ``book``."""
    from domain.cellbook import CellBook, shape_cells
    from domain.model import MatrixShape

    shape = MatrixShape(pairs=[["kvm", "xen"], ["xen", "kvm"]], images=["i0", "i1"], extra=[["kvm", "kvm", "i0"]])
    ids = [c[0] for c in shape_cells(shape)]
    assert ids == [
        "kvm--xen--i0",
        "kvm--xen--i1",
        "xen--kvm--i0",
        "xen--kvm--i1",
        "kvm--kvm--i0",
    ]
    book = CellBook(ids)
    stored = []
    for cid, grade in zip(ids[:3], (Grade.PASS, Grade.FAIL, Grade.PASS)):
        r = _result(cid, grade, "e1000 not offered by the target")
        r.source, r.target, r.image = cid.split("--")
        book.next_attempt(cid)
        book.set_done(cid, CellOutcome.of(r))
        result_store.save(tmp_path, "v5", r)
        stored.append(r)
    book.set_done(ids[3], CellOutcome(Grade.SKIPPED, reason="skipped by operator"))  # never ran: not stored
    # ids[4] still pending: a snapshot of a running campaign
    return CampaignResult("v5", "n", shape=shape, book=book.encode()), stored


def test_rows_come_from_the_book_in_matrix_order(tmp_path: Path) -> None:
    res, _ = _book_result(tmp_path)
    rows = result_store.summary_rows(res)
    assert [(r.cell_id, r.grade) for r in rows] == [
        ("kvm--xen--i0", Grade.PASS),
        ("kvm--xen--i1", Grade.FAIL),
        ("xen--kvm--i0", Grade.PASS),
        ("xen--kvm--i1", Grade.SKIPPED),
    ]
    assert rows[1].reason == "nics: e1000 not offered by the target"
    assert (rows[3].source, rows[3].target, rows[3].image, rows[3].reason) == (
        "xen",
        "kvm",
        "i1",
        "skipped by operator",
    )


def test_attach_reads_a_book_result_from_the_store(tmp_path: Path) -> None:
    res, stored = _book_result(tmp_path)
    out = result_store.attach(res, tmp_path)
    assert [c.cell_id for c in out.cells] == [r.cell_id for r in out.summary]
    assert out.cells[:3] == stored  # whole results: stages and evidence
    assert out.cells[3].grade == Grade.SKIPPED and out.cells[3].checks[0].evidence == {}
    # without the store (another machine), every finished cell is still there, from its row
    bare = result_store.attach(_book_result(tmp_path / "elsewhere")[0], tmp_path / "nothing-here")
    assert [c.grade for c in bare.cells] == [Grade.PASS, Grade.FAIL, Grade.PASS, Grade.SKIPPED]
    assert "full result not found" in bare.cells[1].checks[0].evidence["note"]


def test_stored_results_lists_what_a_campaign_wrote(tmp_path: Path) -> None:
    _, stored = _book_result(tmp_path)
    assert sorted(r.cell_id for r in result_store.stored_results(tmp_path, "v5")) == sorted(r.cell_id for r in stored)
    assert result_store.stored_results(tmp_path, "no-such-campaign") == []


def test_a_legacy_result_still_reads_from_its_summary(tmp_path: Path) -> None:
    r = _result("a", Grade.PASS)
    res = CampaignResult("old", "n", summary=[_row(r)])
    assert result_store.summary_rows(res) == [_row(r)]
