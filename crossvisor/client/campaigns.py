"""Campaigns as Temporal and the result store know them, for ``campaign list`` and the web UI
alike: one lister (visibility, then live progress or the result for the counts) and one loader
(the workflow's summary joined with the store). Caches what cannot change: a closed run's result
and every run's spec name."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossvisor.client.connection import CliError
from crossvisor.core.config import Settings
from crossvisor.core.timefmt import iso, parse_time
from domain.model import CampaignResult, CellResult

QUERY_TIMEOUT_S = 5.0
LIST_LIMIT = 50
GRADE_NAMES = ("pass", "warn", "fail", "error", "skipped")


def status_name(desc_status) -> str:
    """Temporal's execution status, lower case (running, completed, canceled, failed, ...)."""
    return desc_status.name.lower() if desc_status is not None else "unknown"


def campaign_status(wf_status: str) -> str:
    """A closed workflow's status in crossvisor's words (Temporal spells it "canceled")."""
    return "cancelled" if wf_status == "canceled" else wf_status


def counts_of(res: CampaignResult) -> dict[str, int]:
    """A finished campaign's counts, in the shape of the ``progress`` query's."""
    grades = Counter(c.grade.value for c in res.cells)
    counts = {"total": len(res.cells), "done": len(res.cells), "pending": 0, "running": 0}
    for g in GRADE_NAMES:
        counts[g] = grades.get(g, 0)
    counts["cached"] = sum(1 for c in res.cells if c.cached)
    return counts


async def query_progress(client, cid: str):
    """The campaign's ``progress`` query: the one way the CLI and the web UI ask it. None when no
    worker answers in time or the query failed (mid continue-as-new, a closed run); other errors
    (the server, the id) are raised for the caller's policy."""
    from temporalio.client import WorkflowQueryFailedError

    from workflows.campaign import CampaignWorkflow

    try:
        return await asyncio.wait_for(client.get_workflow_handle(cid).query(CampaignWorkflow.progress), QUERY_TIMEOUT_S)
    except (TimeoutError, WorkflowQueryFailedError):
        return None


@dataclass
class CampaignRow:
    """One campaign in a list: the same fields on ``campaign list --json`` and the web UI's."""

    campaign_id: str
    run_id: str
    name: str
    workflow_status: str  # Temporal's: running | completed | failed | terminated | canceled | ...
    status: str  # crossvisor's: running, paused, stalled, draining, completed, cancelled, failed, ...
    started_at: str  # the campaign's first run (a campaign that continued as new has several)
    closed_at: str
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # as the progress query counts
    progress: dict[str, Any] | None = None  # the progress query's answer, running campaigns only


async def fill_cell_times(client, result: CampaignResult) -> int:
    """Cells that recorded no start/finish time get their cell workflow's, from Temporal
    visibility (children ``<campaign>.cell.<cell>.<attempt>``; the newest attempt is the one whose
    result the store holds). Returns how many cells were filled. Cells served from the cache ran
    no workflow and stay without times."""
    cid = result.campaign_id
    if all(c.started_at and c.finished_at for c in result.cells) or "'" in cid or "\\" in cid:
        return 0
    prefix = f"{cid}.cell."
    newest: dict[str, tuple[int, Any]] = {}
    async for wf in client.list_workflows(query=f"ParentWorkflowId = '{cid}'"):
        if not wf.id.startswith(prefix):
            continue
        cell_id, _, attempt = wf.id[len(prefix) :].rpartition(".")
        n = int(attempt) if attempt.isdigit() else 0
        if cell_id not in newest or n > newest[cell_id][0]:
            newest[cell_id] = (n, wf)
    filled = 0
    for cell in result.cells:
        found = newest.get(cell.cell_id)
        if found is None or cell.started_at:
            continue
        wf = found[1]
        cell.started_at, cell.finished_at = iso(wf.start_time), cell.finished_at or iso(wf.close_time)
        filled += 1
    return filled


class Campaigns:
    """Reads campaigns; caches what cannot change (a closed run's result and every run's name)."""

    def __init__(self, settings: Settings, client=None):
        self.settings = settings
        self._client = client
        self._lock = asyncio.Lock()
        self._names: dict[str, str] = {}  # run id -> campaign (spec) name
        self._closed: dict[str, CampaignResult] = {}  # run id -> full result of a closed run

    async def client(self):
        async with self._lock:
            if self._client is None:
                from crossvisor.client.connection import connect

                self._client = await connect(self.settings)
            return self._client

    async def _name(self, client, cid: str, run_id: str) -> str:
        """The spec's name, from the run's input (its first history event): works for runs in any
        state and needs no worker, unlike a query on a closed workflow."""
        if run_id in self._names:
            return self._names[run_id]
        name = ""
        try:
            async for event in client.get_workflow_handle(cid, run_id=run_id).fetch_history_events(page_size=1):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                if payloads:
                    name = json.loads(payloads[0].data).get("plan", {}).get("name", "")
                break
        except Exception:  # noqa: BLE001 - a name is a nicety; the id is always shown
            name = ""
        self._names[run_id] = name
        return name

    async def _progress(self, client, cid: str) -> dict[str, Any] | None:
        try:
            p = await query_progress(client, cid)
        except Exception:  # noqa: BLE001 - the page shows the progress as unknown, whatever the cause
            return None
        return dataclasses.asdict(p) if p is not None else None

    async def list(self, status: str = "", query: str = "", limit: int = LIST_LIMIT) -> list[CampaignRow]:
        """Campaigns from Temporal visibility (``WorkflowType = 'CampaignWorkflow'``), newest first.
        Name, status and counts come from crossvisor's search attributes when the workflow keeps
        them; else from the ``progress`` query (running) or the result (closed)."""
        from workflows import search

        client = await self.client()
        q = "WorkflowType = 'CampaignWorkflow'"
        if query:
            q += f" AND ({query})"
        runs: dict[str, list] = {}
        async for wf in client.list_workflows(query=q, limit=limit * 4):
            runs.setdefault(wf.id, []).append(wf)
        rows: list[CampaignRow] = []
        live: dict[str, bool] = {}
        for cid, execs in runs.items():
            # a campaign that continued as new has several runs: it started with the first, and
            # the newest says where it stands
            first = min(execs, key=lambda w: w.start_time)
            last = max(execs, key=lambda w: w.start_time)
            wf_status = status_name(last.status)
            attrs = search.read(last.typed_search_attributes)
            # attributes the CLI set at start only ("starting") say nothing yet
            live[cid] = bool(attrs and attrs["status"] != "starting")
            rows.append(
                CampaignRow(
                    cid,
                    last.run_id,
                    attrs["name"] if attrs else "",
                    wf_status,
                    attrs["status"] if live[cid] else wf_status,
                    iso(first.start_time),
                    iso(last.close_time),
                    counts=attrs["counts"] if live[cid] else {},
                )
            )
        rows = sorted(rows, key=lambda r: r.started_at, reverse=True)[: limit * 2]

        async def fill(r: CampaignRow) -> None:
            if r.workflow_status == "running":
                # live beats whatever visibility last indexed
                r.progress = await self._progress(client, r.campaign_id)
                if r.progress is not None:
                    p = r.progress
                    r.name = p["name"]
                    r.status = "paused" if p["paused"] and p["status"] == "running" else p["status"]
                    r.counts = dict(p["counts"])
            elif not live[r.campaign_id]:
                try:
                    res = await self.load(r.campaign_id)
                    r.counts = counts_of(res)
                    r.name = r.name or res.name
                    if r.workflow_status == "completed":
                        r.status = res.status
                except Exception:  # noqa: BLE001 - the row stays, without counts
                    pass
            if r.workflow_status not in ("running", "completed"):
                r.status = campaign_status(r.workflow_status)
            if not r.name:
                r.name = await self._name(client, r.campaign_id, r.run_id)

        await asyncio.gather(*(fill(r) for r in rows))
        if status:
            rows = [r for r in rows if status in (r.status, r.workflow_status)]
        return rows[:limit]

    async def progress(self, cid: str) -> dict[str, Any]:
        client = await self.client()
        desc = await client.get_workflow_handle(cid).describe()
        status = status_name(desc.status)
        p = await self._progress(client, cid) if status == "running" else None
        return {"campaign_id": cid, "workflow_status": status, "progress": p}

    async def load(self, cid: str) -> CampaignResult:
        """The campaign as a report shows it: the workflow's summary joined with the store, in
        any state: running (as it stands), completed, cancelled or failed (from the store)."""
        from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError

        from crossvisor.core import result_store
        from domain.model import CellSummary
        from workflows.campaign import CampaignWorkflow

        client = await self.client()
        handle = client.get_workflow_handle(cid)
        desc = await handle.describe()
        if desc.run_id in self._closed:
            return self._closed[desc.run_id]
        started = iso(desc.start_time)
        if desc.status == WorkflowExecutionStatus.RUNNING:
            try:  # bounded at any size: the cell book, not a row per cell
                res = await asyncio.wait_for(handle.query(CampaignWorkflow.snapshot), QUERY_TIMEOUT_S)
                res.started_at = res.started_at or started
            except WorkflowQueryFailedError:  # a worker older than the snapshot query
                rows = await asyncio.wait_for(
                    handle.query(CampaignWorkflow.results, result_type=list[CellSummary]), QUERY_TIMEOUT_S
                )
                p = await asyncio.wait_for(handle.query(CampaignWorkflow.progress), QUERY_TIMEOUT_S)
                res = CampaignResult(cid, p.name, summary=rows, status=p.status, started_at=started)
            res = result_store.attach(res, self.settings.home)
            await fill_cell_times(client, res)
            return res
        if desc.status == WorkflowExecutionStatus.COMPLETED:
            res = await client.get_workflow_handle(cid, result_type=CampaignResult).result()
            res = result_store.attach(res, self.settings.home)
            res.started_at = res.started_at or started
            res.finished_at = res.finished_at or iso(desc.close_time)
        else:
            # failed / terminated / cancelled: no result to read. The campaign's last state (its
            # snapshot, answered by a worker from the closed run's history) covers the whole
            # matrix, as `list` counts it; without a worker, every cell it stored still counts.
            # Before, a cancelled campaign showed only the cells that had run (issue 26: `status`
            # 2/2, `show` 2 cells, `list` 9/9 skipped)
            res = await self._closed_snapshot(handle)
            if res is None:
                res = CampaignResult(cid, await self._name(client, cid, desc.run_id), status=status_name(desc.status))
                res.cells = stored_cells(self.settings.home, cid)
            else:
                res = result_store.attach(res, self.settings.home)
                res.status = campaign_status(status_name(desc.status))
            res.started_at, res.finished_at = started, iso(desc.close_time)
        await fill_cell_times(client, res)
        self._closed[desc.run_id] = res
        return res

    async def _closed_snapshot(self, handle) -> CampaignResult | None:
        from workflows.campaign import CampaignWorkflow

        try:
            return await asyncio.wait_for(handle.query(CampaignWorkflow.snapshot), QUERY_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - no worker, an older worker, a run that failed early
            return None

    async def previous(self, current: CampaignResult) -> CampaignResult | None:
        """The newest completed campaign of the same spec name that started before ``current``."""
        if not current.name:
            return None
        before = parse_time(current.started_at)
        for row in await self.list(limit=200):
            started = parse_time(row.started_at)
            if (
                row.campaign_id != current.campaign_id
                and row.name == current.name
                and row.workflow_status == "completed"
                and (before is None or (started is not None and started < before))
            ):
                return await self.load(row.campaign_id)
        return None


def stored_cells(home: Path, cid: str) -> list[CellResult]:
    from crossvisor.core import result_store

    folder = result_store.campaign_dir(home, cid)
    cells = [result_store.read(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return [c for c in cells if c is not None]


__all__ = ["CampaignRow", "Campaigns", "CliError", "counts_of", "fill_cell_times", "stored_cells"]
