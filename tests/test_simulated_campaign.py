"""The real CampaignWorkflow over a small synthetic lab, with SimulatedCellWorkflow children that
only sleep, on the time-skipping test server: simulated hours replay in seconds."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from bench.scheduler import run_real
from domain import simulation
from domain.scheduling import lower_bound_s


def bound_and_sim(lab: simulation.Lab) -> tuple[float, float]:
    H, PH, PK, L = lab.host_map, lab.platform_hosts, lab.platform_kind, lab.plan.concurrency
    bound = lower_bound_s(lab.cells, lab.duration_s, H, PH, PK, L).seconds
    # the campaign passes the static-model estimates: simulate exactly that
    sim = simulation.simulate(
        lab.cells, lab.duration_s, H, PK, L, simulation.policy_ours(lab), estimate_s=lab.estimate_s
    )
    return bound, sim.makespan_s


async def test_simulated_campaign_finishes_every_cell(env, tmp_path: Path) -> None:
    lab = simulation.synthetic_lab(40)
    bound, sim = bound_and_sim(lab)
    r = await run_real(lab, tmp_path, env=env)
    print(
        f"\n40 cells: makespan/bound {r['makespan_s'] / bound:.3f} (pure simulation {sim / bound:.3f}), wall {r['wall_s']:.1f} s"
    )
    assert r["cells"] == r["passed"] == len(lab.cells)
    assert r["generations"] == 0
    assert r["makespan_s"] >= bound - 1
    # the workflow makes the decisions the pure simulation makes (ties in completion order aside)
    assert abs(r["makespan_s"] - sim) <= 0.05 * sim


async def test_continue_as_new_hands_running_cells_over_at_no_cost(env, tmp_path: Path) -> None:
    """Replay sets v2-v4 stopped starting cells and drained before continuing as new; now the
    running cells carry on (the next run re-attaches to them), so the makespan is the one of a
    run that never continues as new."""
    lab = simulation.synthetic_lab(60)
    (tmp_path / "once").mkdir()
    (tmp_path / "cans").mkdir()
    once = await run_real(lab, tmp_path / "once", history_limit=10**9, env=env)
    r = await run_real(lab, tmp_path / "cans", history_limit=250, env=env)
    print(
        f"\n60 cells, continue-as-new x{r['generations']}, {r['handed_over']} cells handed over: "
        f"makespan {r['makespan_s'] / 3600:.2f} h vs {once['makespan_s'] / 3600:.2f} h without"
    )
    assert once["generations"] == 0 and r["generations"] >= 2
    assert r["cells"] == r["passed"] == len(lab.cells)
    assert r["handed_over"] > 0
    # (completion ties may resolve in another order; a drain cost hours here)
    assert abs(r["makespan_s"] - once["makespan_s"]) <= 0.003 * once["makespan_s"]
    # what crosses continue-as-new stays small: ~2 bytes per cell and the inventory snapshot
    print(f"carried {r['carried_bytes']} B with {r['carried_done']} finished cells")
    assert r["carried_done"] > 0
    assert r["carried_bytes"] < 20_000 + 20 * r["carried_done"]


async def test_a_handed_over_cell_that_closes_without_reporting_is_an_error(env, tmp_path: Path) -> None:
    """A cell workflow terminated after its campaign continued as new never reports; the probe
    (a signal to a closed workflow fails) grades it error and frees its hosts."""
    from temporalio.client import WorkflowExecutionStatus

    from crossvisor.core import result_store
    from domain.model import CampaignResult, Grade

    lab = simulation.synthetic_lab(40)
    cid = f"lost-{uuid.uuid4().hex[:6]}"
    task = asyncio.create_task(run_real(lab, tmp_path, history_limit=250, env=env, campaign_id=cid))
    victim = ""
    for _ in range(400):  # the first run that inherits a running cell
        await asyncio.sleep(0.05)
        h = env.client.get_workflow_handle(cid)
        try:
            hist = await h.fetch_history()
        except Exception:  # noqa: BLE001 - not started yet
            continue
        state = json.loads(hist.events[0].workflow_execution_started_event_attributes.input.payloads[0].data)["state"]
        for r in (state or {}).get("running") or []:
            child = env.client.get_workflow_handle(f"{cid}.cell.{r['cell_id']}.{r['attempt']}")
            if (await child.describe()).status == WorkflowExecutionStatus.RUNNING:
                await child.terminate("operator")
                victim = r["cell_id"]
                break
        if victim:
            break
    assert victim, "no running cell was handed over"
    r = await task
    assert r["cells"] == len(lab.cells) and r["passed"] == len(lab.cells) - 1
    res = await env.client.get_workflow_handle(cid, result_type=CampaignResult).result()
    row = next(x for x in result_store.summary_rows(res) if x.cell_id == victim)
    assert row.grade == Grade.ERROR and "closed without reporting" in row.reason
