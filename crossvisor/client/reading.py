"""Reading one campaign from Temporal: its input (spec), where it stands (the ``progress`` query,
each running cell's stage), an ETA from the scheduler's estimates, and its result (through
``Campaigns``, the loader the web UI uses too)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from crossvisor.client.campaigns import (
    QUERY_TIMEOUT_S,
    Campaigns,
    campaign_status,
    counts_of,
    query_progress,
    status_name,
)
from crossvisor.client.connection import CliError, connect, rpc_error
from crossvisor.core.config import Settings, guest_slots
from crossvisor.core.timefmt import iso
from domain.matrix import human_id

STAGE_QUERY_TIMEOUT_S = 2.0


async def describe(settings: Settings, cid: str):
    client = await connect(settings)
    try:
        return await client.get_workflow_handle(cid).describe()
    except Exception as e:  # noqa: BLE001 - RPC errors become one line
        raise rpc_error(e, settings, cid) from None


async def campaign_input(settings: Settings, cid: str, run_id: str | None = None):
    """The ``CampaignInput`` the campaign's current (or given) run started with: its plan, and the
    state it carried over when it continued as new. Read from history: no worker needed."""
    from domain.messages import CampaignInput

    client = await connect(settings)
    try:
        async for event in client.get_workflow_handle(cid, run_id=run_id).fetch_history_events(page_size=1):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            if not payloads:
                return None
            return client.data_converter.payload_converter.from_payload(payloads[0], CampaignInput)
    except Exception as e:  # noqa: BLE001
        raise rpc_error(e, settings, cid) from None
    return None


async def progress(settings: Settings, cid: str):
    """The ``progress`` query (a worker answers it), or None when none answers in time."""
    client = await connect(settings)
    try:
        return await query_progress(client, cid)
    except Exception as e:  # noqa: BLE001 - the server or the id: said as the CLI says it
        raise rpc_error(e, settings, cid) from None


async def finished_rows(settings: Settings, cid: str) -> list:
    from domain.model import CellSummary
    from workflows.campaign import CampaignWorkflow

    client = await connect(settings)
    try:
        return await asyncio.wait_for(
            client.get_workflow_handle(cid).query(CampaignWorkflow.results, result_type=list[CellSummary]),
            QUERY_TIMEOUT_S,
        )
    except Exception:  # noqa: BLE001 - only the ETA needs it
        return []


async def running_stages(settings: Settings, cid: str) -> dict[str, str]:
    """cell id -> the stage its cell workflow is in (``current_stage`` query of each running child)."""
    client = await connect(settings)
    prefix = f"{cid}.cell."
    if "'" in cid or "\\" in cid:
        return {}
    children: dict[str, tuple[int, str]] = {}
    try:
        async for wf in client.list_workflows(
            query=f"ParentWorkflowId = '{cid}' AND ExecutionStatus = 'Running'", limit=200
        ):
            if not wf.id.startswith(prefix):
                continue
            cell, _, attempt = wf.id[len(prefix) :].rpartition(".")
            n = int(attempt) if attempt.isdigit() else 0
            if cell not in children or n > children[cell][0]:
                children[cell] = (n, wf.id)
    except Exception:  # noqa: BLE001 - stages are a nicety beside the counts
        return {}

    async def stage(wid: str) -> str:
        try:
            return await asyncio.wait_for(client.get_workflow_handle(wid).query("current_stage"), STAGE_QUERY_TIMEOUT_S)
        except Exception:  # noqa: BLE001
            return ""

    names = list(children)
    found = await asyncio.gather(*(stage(children[c][1]) for c in names))
    return {c: s for c, s in zip(names, found) if s}


def cells_of(inp) -> dict[str, Any]:
    """cell id -> Cell for a campaign input (the plan's matrix and cells added while running)."""
    from domain.matrix import expand

    cells = {c.id: c for c in expand(inp.plan)}
    if inp.state:
        cells.update({c.id: c for c in inp.state.extra_cells})
    return cells


def estimate_eta(inp, done: dict[str, bool], age_s: float, max_cells: int) -> float | None:
    """Seconds until every cell is done: the scheduler's static estimate of each remaining cell,
    scaled by how fast the cells done so far went against their own estimates (cached cells cost
    nothing and are left out), over the campaign's parallelism. ``done``: cell id -> cached."""
    from domain.scheduling import estimate_cell_s

    plan = inp.plan
    kinds = {p.name: p.kind for p in plan.platforms}
    est: dict[str, float] = {}
    for cid, c in cells_of(inp).items():
        try:
            est[cid] = estimate_cell_s(plan.image(c.image), kinds[c.source], kinds[c.target])
        except KeyError:
            continue
    remaining = [e for cid, e in est.items() if cid not in done]
    if not remaining:
        return 0.0
    done_est = sum(est.get(cid, 0.0) for cid, cached in done.items() if not cached)
    if done_est > 0 and age_s > 0:
        return age_s * sum(remaining) / done_est  # observed pace
    return sum(remaining) / max(1, min(max_cells or 1, len(remaining)))  # static model only


LAB_RESULTS_MAX = 2000  # newest stored cell results the lab's stage times are read from


def lab_results(settings: Settings) -> list:
    """The newest stored cell results of every campaign of this state dir (the lab's own
    measurements, this campaign's finished cells included)."""
    from crossvisor.core import result_store

    root = result_store.campaign_dir(settings.home, "x").parent
    if not root.is_dir():
        return []
    files = sorted(root.glob("*/*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:LAB_RESULTS_MAX]
    out = []
    for f in files:
        try:
            r = result_store.read(f)
        except (OSError, ValueError, TypeError, KeyError):
            continue  # a file being replaced, or of an older format: not a measurement
        if r is not None:
            out.append(r)
    return out


def lab_eta(
    settings: Settings, cid: str, cells: dict, done: dict[str, bool], at: dict[str, str], max_cells: int, age_s: float
):
    """Seconds left from stage times measured in this lab (``domain.stage_time``), once at least
    two cells have been measured; None before (or when a stage was never measured here)."""
    from domain import stage_time, stages

    model = stage_time.lab_model(lab_results(settings))
    if model.cells < stage_time.MIN_MEASURED_CELLS:
        return None
    pipeline = [s.name for s in stages.PIPELINE if not s.remedial]
    finished = set(done)
    sources_done = {(cells[c].source, cells[c].image) for c in finished if c in cells}
    left = [c for c in cells.values() if c.id not in finished]
    rem = stage_time.remaining_s(model, left, finished, at, pipeline, sources_done)
    if rem is None:
        return None
    # the stage times were measured with the campaign's lanes sharing the machine, so the work
    # left spreads over the lanes (scaling it by the campaign's own pace instead was tried: -22 %
    # on a fresh demo at two cells, but +100 % on a warm one, whose age held a long source wait)
    lanes = min(max_cells or 1, len(left)) if left else 1
    longest = stage_time.longest_remaining_s(model, left, finished, at, pipeline, sources_done) or 0.0
    if not model.slot_bound:
        return stage_time.eta_s(rem, lanes, longest)
    # boots here waited for the machine's guest slots: the boots left cannot finish sooner than
    # their slot time spread over those slots, however many lanes wait for them
    slots = guest_slots()
    slot_work = stage_time.remaining_s(model, left, finished, at, pipeline, sources_done, True, slots) or 0.0
    return stage_time.eta_s(rem, lanes, longest, slot_work, slots)


async def snapshot(settings: Settings, cid: str, stages: bool = True, eta: bool = True) -> dict[str, Any]:
    """Where a campaign stands, for status / watch / list (JSON: these keys are the contract)."""
    desc = await describe(settings, cid)
    wf_status = status_name(desc.status)
    inp = await campaign_input(settings, cid)
    started = (inp.state.started_at if inp and inp.state and inp.state.started_at else "") or iso(desc.start_time)
    try:
        t0 = datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        t0 = desc.start_time
    end = desc.close_time or datetime.now(UTC)
    age = (end - t0).total_seconds() if t0 else None
    doc: dict[str, Any] = {
        "campaign_id": cid,
        "name": inp.plan.name if inp else "",
        "workflow_status": wf_status,
        "run_id": desc.run_id,
        "status": wf_status,
        "paused": False,
        "stall_reason": "",
        "counts": {},
        "running": [],
        "started_at": started,
        "closed_at": iso(desc.close_time),
        "age_s": age,
        "eta_s": None,
        "generation": 0,
        "history_length": desc.history_length,
    }
    if wf_status != "running":
        res = await load_result(settings, cid)
        doc["counts"] = counts_of(res)
        doc["status"] = res.status if wf_status == "completed" else campaign_status(wf_status)
        doc["name"] = doc["name"] or res.name
        doc["eta_s"] = 0.0
        return doc
    p = await progress(settings, cid)
    if p is None:
        doc["status"] = "unknown (no worker answered the progress query)"
        return doc
    doc.update(
        name=p.name,
        status=p.status,
        paused=p.paused,
        stall_reason=p.stall_reason,
        counts=dict(p.counts),
        generation=p.generation,
        history_length=p.history_length,
    )
    cells = cells_of(inp) if inp else {}
    at = await running_stages(settings, cid) if stages and p.running else {}
    doc["running"] = [
        {
            "cell_id": c,
            "cell": human_id(cells[c].source, cells[c].target, cells[c].image) if c in cells else c,
            "hosts": hosts,
            "stage": at.get(c, ""),
        }
        for c, hosts in sorted(p.running.items())
    ]
    if eta and inp and not p.paused and not p.stall_reason:
        rows = await finished_rows(settings, cid)
        max_cells = (inp.state.max_cells if inp.state and inp.state.max_cells else 0) or inp.plan.concurrency.max_cells
        done = {r.cell_id: r.cached for r in rows}
        lab = lab_eta(settings, cid, cells, done, at, max_cells, age or 0.0)
        if lab is not None:
            doc["eta_s"], doc["eta_basis"] = lab, "lab"
        else:
            # the scheduler's static model (sized for real lab hardware), not this lab's pace:
            # the operator is told so, and the text shows no figure (hours for a 20-minute demo)
            doc["eta_s"] = estimate_eta(inp, done, age or 0.0, max_cells)
            doc["eta_basis"] = "model"
    return doc


async def load_result(settings: Settings, cid: str):
    """The campaign as reports show it (``Campaigns.load``)."""
    client = await connect(settings)
    try:
        return await Campaigns(settings, client).load(cid)
    except CliError:
        raise
    except Exception as e:  # noqa: BLE001
        raise rpc_error(e, settings, cid) from None


__all__ = ["campaign_status", "counts_of", "status_name"]
