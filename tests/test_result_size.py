"""No result-size ceiling: at 50,000 cells no payload a campaign produces (the state it carries
across continue-as-new, its result, a page of its results query, its snapshot) comes near 512 KB,
whatever the cells' outcomes. Temporal refuses payloads above 2 MB (and warns from 512 KB)."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from temporalio.converter import DataConverter

from bench.scheduler import run_real
from crossvisor.core import result_store
from domain import control, simulation
from domain.cellbook import MAX_REASON_CHARS, MAX_REASONS, CellBook, CellCatalog
from domain.control import SkipRequest
from domain.messages import RESULTS_PAGE_MAX, CampaignState, ResultsPage, ResultsPageRequest, RunningCell
from domain.model import CELL_GRADES, REASON_KEPT, CampaignResult, CellOutcome, CellSummary, Grade, Host
from workflows.campaign import CampaignWorkflow

LIMIT = 512 * 1024
N = 50_000


def size(value) -> int:
    return len(DataConverter.default.payload_converter.to_payloads([value])[0].data)


def worst_book(ids: list[str]) -> CellBook:
    """Every grade, cached or not, up to 3 attempts, a distinct full-length reason per cell."""
    rng = random.Random(1)
    book = CellBook(ids)
    for n, cid in enumerate(ids):
        for _ in range(rng.randint(1, 3)):
            book.next_attempt(cid)
        reason = f"{n:06d} " + "".join(rng.choice("abcdefghij klmnop") for _ in range(REASON_KEPT))
        book.set_done(cid, CellOutcome(rng.choice(list(CELL_GRADES)), rng.random() < 0.3, reason))
    return book


def test_every_payload_stays_far_below_512_kb_at_50000_cells_whatever_the_outcomes() -> None:
    lab = simulation.synthetic_lab(N, scale=5)
    catalog = CellCatalog(lab.plan)
    assert len(catalog) == N
    book = worst_book(catalog.ids())
    # the reason table is capped (count and characters), plus "(reason in the result store)"
    assert len(book.reasons) <= MAX_REASONS + 1 and sum(map(len, book.reasons)) <= MAX_REASON_CHARS + 40
    hosts = lab.hosts + [Host(f"extra-{i}", "kvm", "libvirt", "qemu+ssh://h/system", "s") for i in range(300)]
    state = CampaignState(
        book=book.encode(),
        running=[RunningCell(cid, "kvm-el8-00", "xen-417-00", 3) for cid in catalog.ids()[:160]],
        hosts=hosts,
        platform_hosts=lab.platform_hosts,
        # the request-id ledger at its longest: every entry a payload kept verbatim up to the cap
        applied_updates=[
            control.ledger_entry(SkipRequest(["c" * (control.LEDGER_PAYLOAD_KEPT - 12)], uuid.uuid4().hex))
            for _ in range(500)
        ],
    )
    result = CampaignResult("c", "n", hosts=hosts, shape=catalog.shape(), book=book.encode())
    page = ResultsPage(
        [CellSummary("x" * 120, "p" * 40, "q" * 40, "i" * 40, Grade.FAIL, False, "r" * REASON_KEPT)] * RESULTS_PAGE_MAX,
        N,
        RESULTS_PAGE_MAX,
    )
    sizes = {"state": size(state), "result": size(result), "page": size(page), "plan": size(lab.plan)}
    print({k: f"{v / 1024:.0f} KiB" for k, v in sizes.items()})
    assert max(sizes.values()) < LIMIT / 2, sizes
    # and the compact form reads back exactly
    back = CellBook.decode(catalog.ids(), book.encode())
    assert back.codes == book.codes and back.attempts == book.attempts and back.why == book.why


@pytest.mark.scale
async def test_a_50000_cell_campaign_completes_with_no_payload_above_512_kb(env, tmp_path: Path) -> None:
    """The real workflow over a 50,000-cell matrix: the inventory has hosts for two platforms
    only, so most cells are graded at the start (skipped, no host) and 400 run as simulated cells,
    continuing as new every few dozen; every event of every run, every page of the results query
    and the snapshot stay below 512 KB, and the result still lists all 50,000 cells."""
    lab = simulation.synthetic_lab(N, scale=5)
    src, tgt = lab.plan.pairs[0]
    keep = set(lab.platform_hosts[src]) | set(lab.platform_hosts[tgt])
    lab.hosts = [h for h in lab.hosts if h.name in keep]
    cid = f"big-{uuid.uuid4().hex[:6]}"

    async def look(client, cid: str) -> dict:
        biggest, run_id, runs = 0, None, 0
        while True:  # every run of the campaign, newest first
            hist = await client.get_workflow_handle(cid, run_id=run_id).fetch_history()
            biggest = max([biggest, *(e.ByteSize() for e in hist.events)])
            runs += 1
            run_id = hist.events[0].workflow_execution_started_event_attributes.continued_execution_run_id
            if not run_id:
                break
        handle = client.get_workflow_handle(cid)
        # the first, a middle and the last page (every page holds RESULTS_PAGE_MAX rows at most;
        # a query on a closed campaign replays its last run, ~0.5 s here, so not all 100)
        pages, rows = [], 0
        for offset in (0, N // 2, N - RESULTS_PAGE_MAX):
            page = await handle.query(CampaignWorkflow.results_page, ResultsPageRequest(offset, 10**6))
            assert page.total == N and len(page.rows) == RESULTS_PAGE_MAX
            assert page.next_offset == (-1 if offset + RESULTS_PAGE_MAX >= N else offset + RESULTS_PAGE_MAX)
            pages.append(size(page))
            rows += len(page.rows)
        snap = await handle.query(CampaignWorkflow.snapshot)
        res = await client.get_workflow_handle(cid, result_type=CampaignResult).result()
        return {"runs": runs, "biggest": biggest, "pages": pages, "snapshot": snap, "result": res}

    r = await run_real(lab, tmp_path, history_limit=600, env=env, campaign_id=cid, inspect=look)
    ran = sum(1 for c in lab.cells if {c.source, c.target} <= {src, tgt})
    assert r["cells"] == N and r["passed"] == ran and ran >= 200
    assert r["generations"] >= 2
    seen = r["inspected"]
    pages, snap, res = seen["pages"], seen["snapshot"], seen["result"]
    print(
        f"\n{seen['runs']} runs, largest event {seen['biggest'] / 1024:.0f} KiB, pages of {RESULTS_PAGE_MAX} rows "
        f"(largest {max(pages) / 1024:.0f} KiB), snapshot {size(snap) / 1024:.0f} KiB, result {size(res) / 1024:.0f} KiB"
    )
    assert seen["runs"] == r["generations"] + 1
    assert seen["biggest"] < LIMIT and max(pages) < LIMIT and size(snap) < LIMIT and size(res) < LIMIT
    rows = result_store.summary_rows(res)
    assert len(rows) == N and not res.summary  # one row per cell, none of them in the result itself
    assert sum(x.grade == Grade.PASS for x in rows) == ran
    assert {x.reason for x in rows if x.grade == Grade.SKIPPED} == {
        f"no healthy host matches platform(s) {m}" for m in _missing(lab, src, tgt)
    }
    assert result_store.summary_rows(snap) == rows  # the snapshot reads like the result


def _missing(lab: simulation.Lab, src: str, tgt: str) -> set[str]:
    have = {src, tgt}
    out = set()
    for c in lab.cells:
        missing = [p for p in (c.source, c.target) if p not in have]
        if missing:
            out.add(str(missing))
    return out
