"""Cells keep running across a continue-as-new: the next run re-attaches to them by workflow id
(they report by signal) instead of waiting for them first. Real cells (libvirt test driver,
qemu-img, OVA) on the real Temporal dev server, whose clock is the wall clock: nothing here
depends on the time-skipping test server's bookkeeping (see bench/timeskip.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from crossvisor.core import result_store
from domain.control import CancelRequest
from domain.model import Grade, GuestImage
from inventory.file_source import FileInventory
from tests.harness import campaign_result, leaked_vms, make_worker, small_plan, start_campaign
from workflows.campaign import CampaignWorkflow

pytestmark = pytest.mark.timeout(240)


async def runs_of(client, cid: str) -> list[dict]:
    """Each run's carried state, first run first (walking continue-as-new back from the last)."""
    states, run_id = [], None
    while True:
        hist = await client.get_workflow_handle(cid, run_id=run_id).fetch_history()
        start = hist.events[0].workflow_execution_started_event_attributes
        states.insert(0, json.loads(start.input.payloads[0].data).get("state") or {})
        run_id = start.continued_execution_run_id or None
        if not run_id:
            return states


def slow_stage(sab, stage: str, seconds: float, stagger_s: float = 0.0) -> None:
    def hold(call) -> None:  # long enough that a continue-as-new lands while cells run
        # staggered by image: two cells started together would otherwise end together, and the
        # continue-as-new their ends trigger would find nothing left running
        time.sleep(seconds + stagger_s * int(call.cell.image.name.lstrip("i") or 0))

    sab.before[stage] = hold


async def test_cells_run_on_across_continue_as_new(dev_env, settings, tmp_path: Path, executor) -> None:
    plan = small_plan(tmp_path, images=[GuestImage(f"i{n}", disk_mib=8) for n in range(4)])
    tq = f"tq-{uuid.uuid4().hex[:6]}"
    w, sab = make_worker(dev_env.client, settings, tq, executor, sabotage=True)
    slow_stage(sab, "boot", 0.4, stagger_s=0.6)  # cells of different lengths: one is still running at each end
    cid = f"c-{uuid.uuid4().hex[:8]}"
    async with w:
        h = await start_campaign(dev_env.client, plan, tq, cid, history_limit=30)
        res = await asyncio.wait_for(campaign_result(h, settings.home), 180)
        states = await runs_of(dev_env.client, cid)
    assert res.status == "completed" and res.book and len(res.summary) == 8  # rows decoded from the book
    assert len(res.cells) == 8 and all(c.grade == Grade.PASS for c in res.cells), [c.checks for c in res.cells]
    assert all(c.stages for c in res.cells)  # every full result reached the store, handed over or not
    handed = [r["cell_id"] for s in states for r in s.get("running") or []]
    assert len(states) >= 2 and handed, "no run inherited a running cell"
    assert all(not s.get("done") and not s.get("pending") for s in states)  # only the compact book crosses
    assert leaked_vms() == []
    assert FileInventory(plan.inventory[5:], settings.home / "inventory").leases() == {}


async def test_cancel_reaches_cells_a_previous_run_started(dev_env, settings, tmp_path: Path, executor) -> None:
    plan = small_plan(tmp_path, images=[GuestImage(f"i{n}", disk_mib=8) for n in range(4)])
    tq = f"tq-{uuid.uuid4().hex[:6]}"
    w, sab = make_worker(dev_env.client, settings, tq, executor, sabotage=True)
    release = threading.Event()
    held, _ = sab.hold_first("verify", release)  # the other slot's cells finish, so the campaign continues as new
    cid = f"c-{uuid.uuid4().hex[:8]}"
    async with w:
        try:
            h = await start_campaign(dev_env.client, plan, tq, cid, history_limit=25)
            last = dev_env.client.get_workflow_handle(cid)
            for _ in range(2400):  # until a later run holds the held cell (4 min: a loaded machine is slow)
                p = await last.query(CampaignWorkflow.progress)
                if held and p.generation >= 1:
                    states = await runs_of(dev_env.client, cid)
                    if held[0] in {r["cell_id"] for r in states[-1].get("running") or []}:
                        break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("no continue-as-new handed the held cell over")
            await last.execute_update(CampaignWorkflow.cancel, CancelRequest("c1"))
        finally:
            release.set()
        res = await asyncio.wait_for(campaign_result(h, settings.home), 180)
    assert res.status == "cancelled"
    assert len(res.cells) == 8
    grades = {c.cell_id: c.grade for c in res.cells}
    assert set(grades.values()) <= {Grade.PASS, Grade.SKIPPED}, [
        (c.cell_id, c.grade, c.checks[0].reason, c.cell_id == held[0]) for c in res.cells
    ]
    assert grades[held[0]] == Grade.SKIPPED  # the inherited cell was cancelled, not left to finish
    assert leaked_vms() == []
    assert FileInventory(plan.inventory[5:], settings.home / "inventory").leases() == {}
    stored = {r.cell_id for r in result_store.stored_results(settings.home, cid)}
    assert stored <= {c.cell_id for c in res.cells}
