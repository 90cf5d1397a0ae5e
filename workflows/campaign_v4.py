"""The campaign generation of replay sets v2-v4: runs that did not take the patch
``reattach-across-continue-as-new``. Kept only so that such runs, still open when a new worker
is deployed, replay; new campaigns (and every run they continue into) run ``campaign_v5.py``.

How it differs: it keeps every cell's outcome in ``CampaignState.done`` and the pending ids in a
list, schedules with ``scheduling.schedule_v4`` (the exact decisions these runs recorded), returns
a row per cell, and before continuing as new it stops starting cells and waits until every
running one has ended (its children do not outlive the run).

Retire it (delete this file and its branch in ``campaign.py``, deprecate the patch) once the
replay ledger (tests/replay/README.md) says no v4 run can still be running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from domain import control, matrix, scheduling
    from domain.control import ControlResult, ControlView, RetryRequest, SkipRequest
    from domain.messages import CampaignInput, InventorySnapshot, StoreResultRequest
    from domain.model import CampaignResult, Cell, CellOutcome, CellResult, CellSummary, CheckResult, Grade
    from workflows.campaign_base import (
        ACT_RETRY,
        MAX_RESCHEDULES,
        QUIET_BEFORE_CLOSE,
        SHORT,
        CampaignRun,
        read_child_result,
        read_result,
        unhealthy_host,
    )

# deprecated: only the retired replay set v1 predates it (tests/replay/README.md)
STORE_RESULT_LOCAL = "store-result-local"


class DrainingRun(CampaignRun):
    def __init__(self, inp: CampaignInput) -> None:
        super().__init__(inp)
        self._est: dict[str, float] = {}  # cell id -> estimated seconds (scheduling only)
        self.cells: Mapping[str, Cell] = {c.id: c for c in matrix.expand(inp.plan) + self.st.extra_cells}

    # -- cells as these runs kept them: outcomes in st.done, pending ids in st.pending ------------
    def summary(self) -> list[CellSummary]:
        rows = []
        for cid, c in self.cells.items():
            o = self.st.done.get(cid)
            if o is not None:
                rows.append(CellSummary(cid, c.source, c.target, c.image, o.grade, o.cached, o.reason))
        return rows

    def page(self, offset: int, limit: int) -> tuple[int, list[CellSummary]]:
        every = self.summary()
        return len(every), every[offset : offset + limit]

    def fill_result(self, res: CampaignResult) -> None:
        res.summary = self.summary()

    def counts(self) -> dict[str, int]:
        counts = {
            "total": len(self.cells),
            "pending": len(self.st.pending),
            "running": len(self.running),
            "done": len(self.st.done),
        }
        counts.update({g.value: 0 for g in Grade})
        counts["cached"] = 0
        for o in self.st.done.values():
            counts[o.grade.value] += 1
            counts["cached"] += o.cached
        return counts

    def view(self) -> ControlView:
        by_platform: dict[str, list[tuple[str, str]]] = {}
        for cid, c in self.cells.items():
            by_platform.setdefault(c.source, []).append((cid, c.target))
            if c.target != c.source:
                by_platform.setdefault(c.target, []).append((cid, c.source))
        return ControlView(
            plan=self.plan,
            status=self.status,
            cell_ids=set(self.cells),
            done=self.st.done,
            pending=self.st.pending,
            running=set(self.running),
            hosts=self.st.hosts,
            platform_hosts=self.st.platform_hosts,
            unavailable=self.st.unavailable_hosts,
            cells_by_platform=by_platform,
        )

    def retry(self, req: RetryRequest) -> ControlResult:
        requeued = []
        for c in control.retry_targets(self.view(), req):
            if c in self.running or c in self.st.pending:
                continue
            self.st.done.pop(c, None)
            self.st.pending.append(c)
            requeued.append(c)
        return ControlResult(True, f"requeued {len(requeued)} cells", requeued)

    def skip(self, req: SkipRequest) -> ControlResult:
        done = []
        for c in req.cells:
            if c in self.st.pending:
                self.st.pending.remove(c)
                self.st.done[c] = CellOutcome(Grade.SKIPPED, reason=control.OPERATOR_SKIP)
                done.append(c)
        return ControlResult(True, f"skipped {len(done)} cells", done)

    def add_cell(self, cell: Cell) -> None:
        self.cells[cell.id] = cell  # type: ignore[index]  # a dict here
        self.st.pending.append(cell.id)

    def has_pending(self) -> bool:
        return bool(self.st.pending)

    def pending_cells(self) -> list[Cell]:
        return [self.cells[c] for c in self.st.pending]

    def place_cells(self, snap: InventorySnapshot) -> None:
        self.st.pending = [c for c in self.cells if c not in self.st.done]
        # cells whose platform has no host can never run: say so instead of waiting forever
        for cid in list(self.st.pending):
            c = self.cells[cid]
            missing = [p for p in (c.source, c.target) if not snap.platform_hosts.get(p)]
            if missing:
                self.st.pending.remove(cid)
                self.st.done[cid] = CellOutcome(Grade.SKIPPED, reason=f"no healthy host matches platform(s) {missing}")

    # -- continue as new only once every running cell has ended -----------------------------------
    def may_continue(self) -> bool:
        return not self.running

    async def continue_as_new(self, inp: CampaignInput) -> None:
        """Every cell has finished: continue as new with the compact state (never returns)."""
        # Continue-as-new must be the last command of its task: a progress local activity that
        # resolved in the same task put its marker after it, and the task failed until the timing
        # changed. So let local activities and update handlers finish first (outside the lock,
        # which handlers take; resolves in the same task when nothing is in flight). Patched: runs
        # recorded before it continued at once.
        if workflow.patched(QUIET_BEFORE_CLOSE):
            await workflow.wait_condition(self.quiet)
        if self.cancel_requested:
            return  # a cancel arrived meanwhile: the loop takes the cancel path
        self.st.generation += 1
        workflow.continue_as_new(
            CampaignInput(
                plan=self.plan,
                campaign_id=self.campaign_id,
                state=self.st,
                history_limit=inp.history_limit,
                cell_workflow=inp.cell_workflow,
            )
        )

    async def cancel_cells(self) -> None:
        for t in self.tasks.values():
            t.cancel()
        await workflow.wait_condition(lambda: not self.running)
        for cid in list(self.st.pending):
            self.st.done[cid] = CellOutcome(Grade.SKIPPED, reason="campaign cancelled")
        self.st.pending.clear()

    # -- starting and completing cells: children of this run ----------------------------------------
    def start_ready_cells(self) -> None:
        plan = self.plan
        hosts = {h.name: h for h in self.st.hosts}
        kinds = {p.name: p.kind for p in plan.platforms}
        load: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        for cid, a in self.running.items():
            load[a.source_host] = load.get(a.source_host, 0) + 1
            load[a.target_host] = load.get(a.target_host, 0) + 1
            c = self.cells[cid]
            for k in {kinds[c.source], kinds[c.target]}:
                by_kind[k] = by_kind.get(k, 0) + 1
        limits = self.limits()
        out = set(self.st.unavailable_hosts)
        for cid in list(self.st.pending):
            c = self.cells[cid]
            dead = [p for p in (c.source, c.target) if not set(self.st.platform_hosts.get(p, [])) - out]
            if dead:  # every host of a platform is out of service: waiting would never end
                self.st.pending.remove(cid)
                self.st.done[cid] = CellOutcome(Grade.SKIPPED, reason=f"no healthy host left for platform(s) {dead}")
        pending = [self.cells[c] for c in self.st.pending]
        picks = scheduling.schedule_v4(  # the exact decisions these runs recorded
            pending,
            hosts,
            self.st.platform_hosts,
            kinds,
            scheduling.LabState(load, by_kind, len(self.running)),
            limits,
            estimate_s=self._estimates(pending, kinds),
            unavailable=frozenset(self.st.unavailable_hosts),
        )
        for a in picks:
            self.st.pending.remove(a.cell_id)
            self.running[a.cell_id] = a
            self.st.attempts[a.cell_id] = self.st.attempts.get(a.cell_id, 0) + 1
            self.tasks[a.cell_id] = asyncio.create_task(self._run_cell(a, hosts))

    def _estimates(self, pending: list[Cell], kinds: dict[str, str]) -> dict[str, float]:
        # a static cost model (per stage + per GiB); cached per run, never carried across runs
        for c in pending:
            if c.id not in self._est:
                self._est[c.id] = scheduling.estimate_cell_s(self.plan.image(c.image), kinds[c.source], kinds[c.target])
        return self._est

    async def _run_cell(self, a: scheduling.Assignment, hosts: dict) -> None:
        cell = self.cells[a.cell_id]
        attempt = self.st.attempts[a.cell_id]
        inp = self.cell_input(cell, a, hosts, attempt)
        raw: RawValue | None = None
        result: CellResult | None = None
        try:
            # the result stays a raw payload: it goes to the store untouched, and the campaign
            # reads only its outcome (see read_child_result)
            raw = await workflow.execute_child_workflow(
                self.cell_workflow,
                inp,
                result_type=RawValue,
                id=f"{self.campaign_id}.cell.{cell.id}.{attempt}",
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                # on cancel, wait for the child's cleanup/release instead of abandoning it
                cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except ChildWorkflowError as e:  # the cell workflow itself failed (a bug, not interop)
            result = self.skipped_result(cell.id, f"cell workflow failed: {e.cause or e}")
            result.checks = [CheckResult(c.check, Grade.ERROR, c.reason) for c in result.checks]
        except asyncio.CancelledError:
            # the campaign was cancelled and so was the child (its cleanup ran); record it
            result = self.skipped_result(cell.id, "campaign cancelled")
        if raw is not None:
            outcome, stages = read_child_result(raw)
        else:
            assert result is not None
            outcome, stages = read_result(result)
        bad_host = unhealthy_host(stages)
        if bad_host and self.st.attempts.get(cell.id, 0) < MAX_RESCHEDULES:
            # the inventory took a host out of service mid-cell: run the cell elsewhere instead
            # of grading the pair on a broken host
            async with self.lock:
                if bad_host not in self.st.unavailable_hosts:
                    self.st.unavailable_hosts.append(bad_host)
                self.running.pop(cell.id, None)
                self.tasks.pop(cell.id, None)
                self.st.pending.append(cell.id)
                self.dirty = True
            return
        # persist before marking done: the main loop may finish the campaign as soon as it sees
        # the last cell done, and an activity still in flight then would be lost
        args = (
            [StoreResultRequest(self.campaign_id, None, inp.source.kind, inp.target.kind), raw]
            if raw is not None
            # both arguments always: with one, the SDK decodes none of them (the activity declares
            # two) and the activity gets a dict
            else [StoreResultRequest(self.campaign_id, result, inp.source.kind, inp.target.kind), None]
        )
        # an idempotent file write: as a local activity it costs no server round trip, and a
        # worker killed before the task completes simply writes the same file again
        workflow.deprecate_patch(STORE_RESULT_LOCAL)
        await workflow.execute_local_activity(
            "store_result", args=args, start_to_close_timeout=SHORT, retry_policy=ACT_RETRY
        )
        async with self.lock:
            self.running.pop(cell.id, None)
            self.tasks.pop(cell.id, None)
            self.st.done[cell.id] = outcome
            self.dirty = True
        await self._publish()
