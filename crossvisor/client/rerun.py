"""``campaign retry`` on a campaign that has ended: a new run under the same id that starts with
every other cell's outcome (so only the named, or the failed/errored, cells run again; reports
keep the others), from the same spec. Passed results of identical cells come from the cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from crossvisor.client.connection import EXIT_INPUT, CliError
from crossvisor.client.starting import Notify
from crossvisor.core.config import Settings


def plan_rerun(outcomes: dict[str, Any], all_cells: set[str], req) -> list[str]:
    """The cells a rerun runs. ``outcomes``: cell id -> CellOutcome of the ended campaign (cells
    that never ran have none). --failed: fail/error, and cells that never ran (a cancelled or
    failed campaign); named cells: those, which must exist."""
    from domain.control import RETRYABLE

    if req.cells:
        unknown = sorted(c for c in set(req.cells) if c not in all_cells)
        if unknown:
            raise CliError(f"retry: unknown cells {unknown}", EXIT_INPUT)
        picked = list(dict.fromkeys(req.cells))
        if req.failed:
            picked += [c for c, o in outcomes.items() if o.grade in RETRYABLE and c not in picked]
        return picked
    failed = sorted(c for c, o in outcomes.items() if o.grade in RETRYABLE)
    never_ran = sorted(c for c in all_cells if c not in outcomes)
    if not failed and not never_ran:
        raise CliError("retry --failed: no cell failed or errored", EXIT_INPUT)
    return failed + never_ran


async def rerun(
    settings: Settings, cid: str, req, desc, typed: dict[str, str], notify: Notify | None = None
) -> dict[str, Any]:
    from temporalio.client import WorkflowExecutionStatus

    from crossvisor.client import reading
    from crossvisor.client.starting import start_workflow
    from domain.matrix import expand
    from domain.messages import CampaignInput, CampaignState
    from domain.model import CellOutcome

    inp = await reading.campaign_input(settings, cid)
    if inp is None:
        raise CliError(f"campaign {cid}: its input is not readable from history; start it again from its spec")
    res = await reading.load_result(settings, cid)
    outcomes: dict[str, CellOutcome] = {}
    if desc.status == WorkflowExecutionStatus.COMPLETED and res.summary:
        for row in res.summary:
            if row.reason != "campaign cancelled":
                outcomes[row.cell_id] = CellOutcome(row.grade, row.cached, row.reason)
    else:
        for c in res.cells:  # cancelled / failed / terminated: what the store holds
            outcomes[c.cell_id] = CellOutcome.of(c)
    cells = reading.cells_of(inp)
    base = {c.id for c in expand(inp.plan)}
    again = plan_rerun(outcomes, set(cells), req)
    state = CampaignState(
        started_at=datetime.now(UTC).isoformat(),
        done={c: o for c, o in outcomes.items() if c not in again and c in cells},
        extra_cells=[c for cid_, c in cells.items() if cid_ not in base],
        max_cells=inp.state.max_cells if inp.state else 0,
    )
    new = CampaignInput(
        plan=inp.plan,
        campaign_id=inp.campaign_id or cid,
        state=state,
        history_limit=inp.history_limit,
        cell_workflow=inp.cell_workflow,
    )
    await start_workflow(settings, new, cid, len(cells), notify)
    after = await reading.describe(settings, cid)
    human = [typed.get(c) or _human(cells, c) for c in again]
    return {
        "applied": True,
        "rerun": True,
        "run_id": after.run_id,
        "cells": again,
        "message": f"rerun started (run {after.run_id}): {len(again)} cells run again "
        f"({', '.join(human[:5])}{' ...' if len(human) > 5 else ''}); {len(state.done)} keep their results",
    }


def _human(cells: dict, cid: str) -> str:
    from domain.matrix import human_id

    c = cells.get(cid)
    return human_id(c.source, c.target, c.image) if c else cid
