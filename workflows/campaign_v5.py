"""The live campaign generation (replay set v5 on, patch ``reattach-across-continue-as-new``):
every new campaign runs this.

Continue-as-new without a drain: Temporal does not carry child workflows over a continue-as-new,
so campaigns of replay sets v2-v4 (``campaign_v4.py``) stopped starting cells and waited for every
running one to end first (+2.2 % of a month-long campaign). Here cells run with
``ParentClosePolicy.ABANDON``; before continuing, the run asks each of its running cells to report
to the campaign by workflow id (``workflows.reporting``), and the next run re-attaches to them by
id: it keeps their hosts busy and takes their results from the ``cell_finished`` signal. A cell
closed without reporting (terminated) is found by a probe.

What a run keeps per cell is a ``domain.cellbook.CellBook`` (grade code, attempts, reason index);
pending cells live in a ``scheduling.PendingPool``; both cost O(1) per completion and cross
continue-as-new (and end the campaign) as ~2 bytes per cell, so 50,000 cells stay far below
Temporal's payload limits.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError, ChildWorkflowError, FailureError

with workflow.unsafe.imports_passed_through():
    from domain import control, inventory_delta, scheduling
    from domain.cellbook import CellBook, CellCatalog
    from domain.control import ControlResult, ControlView, RetryRequest, SkipRequest
    from domain.messages import (
        CampaignInput,
        CellReport,
        InventoryDelta,
        InventoryRefreshRequest,
        InventorySnapshot,
        RunningCell,
        StoreResultRequest,
    )
    from domain.model import CampaignResult, Cell, CellOutcome, CellResult, CellSummary, CheckResult, Grade
    from workflows.campaign_base import (
        ACT_RETRY,
        MAX_RESCHEDULES,
        SHORT,
        CampaignRun,
        read_child_result,
        read_result,
        unhealthy_host,
    )
    from workflows.reporting import REPORT_TO_CAMPAIGN

# a refresh that keeps failing is given up until the next interval: the campaign keeps the view it has
REFRESH_RETRY = RetryPolicy(
    maximum_attempts=3, maximum_interval=timedelta(seconds=30), non_retryable_error_types=["InventoryError"]
)
# a cell inherited across continue-as-new that has not reported for this long is probed: did its
# workflow close without reporting (terminated, timed out)?
PROBE_INHERITED_S = 6 * 3600
PROBE_CANCELLED_S = 60  # once cancelled, they should be done within minutes
# workflow.patched ids asked only on this generation's paths (tests/replay/README.md)
INVENTORY_REFRESH = "inventory-refresh"  # replay set v6 on: the inventory is refreshed every plan.refresh_interval_s()
# replay set v7 on, asked only when a cancelled campaign's child ended Canceled (the cancel reached
# it before its first task, so it never ran its own cancel handling): skipped, not an error
CANCELLED_CHILD_SKIPPED = "cancelled-child-is-skipped"


class LiveRun(CampaignRun):
    def __init__(self, inp: CampaignInput) -> None:
        super().__init__(inp)
        st = self.st
        self.catalog = CellCatalog(self.plan, st.extra_cells)
        self.cells = self.catalog  # a lazy mapping: a cell's fingerprint is computed when it runs
        self.book = CellBook.decode(self.catalog.ids(), st.book)
        self.images = {i.name: i for i in self.plan.images}
        self._est_by_kind: dict[tuple[str, str, str], float] = {}
        self.pool = scheduling.PendingPool(self.kinds)
        self.inherited: set[str] = set()  # running cells started by an earlier run (they report by signal)
        self.starting: set[str] = set()  # child start not confirmed yet
        self.completing: set[str] = set()  # result in hand, not stored yet
        self._by_platform: dict[str, list[tuple[str, str]]] | None = None
        self._dead_checked: tuple | None = None
        self._hosts_of: tuple[list, dict] | None = None
        # a run of replay sets v2-v4 that continued into this code: fold its state in once
        for cid, o in st.done.items():
            if cid in self.catalog:
                self.book.set_done(cid, o)
        for cid, n in st.attempts.items():
            if cid in self.catalog:
                self.book.attempts[self.book.index[cid]] = n
        for r in st.running:
            self.running[r.cell_id] = scheduling.Assignment(r.cell_id, r.source_host, r.target_host)
            self.book.attempts[self.book.index[r.cell_id]] = r.attempt
            self.inherited.add(r.cell_id)
        if st.hosts:  # a continued run: every cell neither done nor running is pending
            pending = st.pending or [c for c in self.book.not_done_ids() if c not in self.running]
            for cid in pending:
                if cid in self.catalog and not self.book.is_done(cid) and cid not in self.running:
                    self._queue(cid)
        st.done, st.pending, st.attempts, st.running, st.book = {}, [], {}, [], ""

    def _queue(self, cid: str) -> None:
        s, t, image = self.catalog.where(cid)
        key = (image, self.kinds[s], self.kinds[t])
        est = self._est_by_kind.get(key)  # the static model depends on these only
        if est is None:
            est = self._est_by_kind[key] = scheduling.estimate_cell_s(self.images[image], key[1], key[2])
        self.pool.add(self.catalog.light(cid), est)

    # -- cells: a book of outcomes, a pool of pending cells -----------------------------------------
    def summary(self) -> list[CellSummary]:
        return list(self.book.rows(self.catalog.places))

    def page(self, offset: int, limit: int) -> tuple[int, list[CellSummary]]:
        return self.book.done, list(itertools.islice(self.book.rows(self.catalog.places), offset, offset + limit))

    def fill_result(self, res: CampaignResult) -> None:
        # bounded: no row per cell (result_store.summary_rows reads shape + book)
        res.shape, res.book = self.catalog.shape(), self.book.encode()

    def counts(self) -> dict[str, int]:
        # kept as the cells finish: no pass over every cell per publish
        return {
            "total": len(self.catalog),
            "pending": len(self.pool),
            "running": len(self.running),
            "done": self.book.done,
            **self.book.grade_counts(),
        }

    def view(self) -> ControlView:
        if self._by_platform is None:  # cached: it changes only when cells are added
            self._by_platform = {}
            for cid, (src, tgt, _) in self.catalog.places.items():
                self._by_platform.setdefault(src, []).append((cid, tgt))
                if tgt != src:
                    self._by_platform.setdefault(tgt, []).append((cid, src))
        return ControlView(
            plan=self.plan,
            status=self.status,
            cell_ids=self.catalog,  # read-only views: validators only test membership and iterate
            done=self.book.done_view(),
            pending=self.pool,
            running=set(self.running),
            hosts=self.st.hosts,
            platform_hosts=self.st.platform_hosts,
            unavailable=self.st.unavailable_hosts,
            cells_by_platform=self._by_platform,
        )

    def retry(self, req: RetryRequest) -> ControlResult:
        requeued = []
        for c in control.retry_targets(self.view(), req):
            if c in self.running or c in self.pool:
                continue
            self.book.clear(c)
            self._queue(c)
            requeued.append(c)
        return ControlResult(True, f"requeued {len(requeued)} cells", requeued)

    def skip(self, req: SkipRequest) -> ControlResult:
        done = []
        for c in req.cells:
            if c in self.pool:
                self.pool.remove(c)
                self.book.set_done(c, CellOutcome(Grade.SKIPPED, reason=control.OPERATOR_SKIP))
                done.append(c)
        return ControlResult(True, f"skipped {len(done)} cells", done)

    def add_cell(self, cell: Cell) -> None:
        self.catalog.add(cell)
        self.book.add(cell.id)
        self._by_platform = None
        self._queue(cell.id)

    def has_pending(self) -> bool:
        return bool(len(self.pool))

    def pending_cells(self) -> list[Cell]:
        return self.pool.cells()

    def place_cells(self, snap: InventorySnapshot) -> None:
        for cid in list(self.book.not_done_ids()):
            s, t, _ = self.catalog.where(cid)
            missing = [p for p in (s, t) if not snap.platform_hosts.get(p)]
            if missing:  # can never run: say so instead of waiting forever
                self.book.set_done(
                    cid, CellOutcome(Grade.SKIPPED, reason=f"no healthy host matches platform(s) {missing}")
                )
            elif cid not in self.running:
                self._queue(cid)

    # -- background: probe inherited cells, refresh the inventory ----------------------------------
    def start_background(self) -> None:
        if self.inherited:
            asyncio.create_task(self._probe_inherited())
        interval = self.plan.refresh_interval_s()
        # Patched: runs recorded before it (replay sets v2-v5) never refreshed their inventory.
        if interval > 0 and workflow.patched(INVENTORY_REFRESH):
            asyncio.create_task(self._refresh_inventory_every(interval))

    async def _refresh_inventory_every(self, interval_s: int) -> None:
        """Every ``interval_s``: ask the inventory what changed since the last pull and apply it. A
        host that left service gets no new cells (its running cells go on); a new or repaired one
        becomes schedulable. A platform left without hosts has its pending cells skipped with the
        reason, as when the first pull found none (``_skip_dead_platforms``)."""
        while True:
            await workflow.sleep(interval_s)
            if self.closing:
                return
            plan = self.plan
            try:
                delta = await workflow.execute_activity(
                    "refresh_inventory",
                    InventoryRefreshRequest(
                        plan.inventory, self.selections(), netbox=dict(plan.netbox), cursor=self.st.inventory_cursor
                    ),
                    result_type=InventoryDelta,
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=REFRESH_RETRY,
                )
            except ActivityError as e:
                workflow.logger.warning("inventory refresh failed, keeping the current view: %s", e.cause or e)
                continue
            if self.closing:
                return
            async with self.lock:
                applied = inventory_delta.apply_delta(self.st.hosts, self.st.platform_hosts, delta)
                self.st.inventory_cursor = delta.cursor
                if applied.changed:
                    self.st.hosts = applied.hosts
                    self.st.platform_hosts = applied.platform_hosts
                    self._dead_checked = None  # which platforms have hosts left may have changed
                    self.dirty = True
            if applied.added or applied.removed:
                workflow.logger.info(
                    "inventory refreshed: schedulable again %s, out of service %s (%s)",
                    applied.added,
                    applied.removed,
                    "; ".join(f"{k}: {v}" for k, v in sorted(delta.gone.items())),
                )

    # -- continue as new while cells run: hand them over -------------------------------------------
    def may_continue(self) -> bool:
        return True  # running cells are handed over, not waited for

    async def continue_as_new(self, inp: CampaignInput) -> None:
        """Continue as new while cells run (never returns unless a cancel arrived).

        Each running cell this run started is asked to report to the campaign by workflow id
        (it runs with ParentClosePolicy.ABANDON, so it outlives this run); the next run
        re-attaches to it by id. Nothing starts meanwhile; that takes one round trip, not the
        hours a drain waited for the longest running cell."""
        # every start confirmed (an ABANDON child must have started before its parent closes)
        # and every result in hand stored
        await workflow.wait_condition(lambda: not self.starting and not self.completing)
        self.closing = True
        own = [cid for cid in self.running if cid not in self.inherited]
        closed = [cid for cid, ok in zip(own, await asyncio.gather(*map(self._ask_to_report, own))) if not ok]
        # a cell that closed before it heard us: its completion comes to this run, which is its
        # parent; wait for it (and for anything still being stored) before handing over
        await workflow.wait_condition(
            lambda: all(c not in self.running for c in closed) and not self.completing and self.quiet()
        )
        if self.cancel_requested:
            self.closing = False
            return  # a cancel arrived meanwhile: the loop takes the cancel path
        st = self.st
        st.book = self.book.encode()
        st.running = [
            RunningCell(cid, a.source_host, a.target_host, self.book.attempt(cid)) for cid, a in self.running.items()
        ]
        st.generation += 1
        workflow.continue_as_new(
            CampaignInput(
                plan=self.plan,
                campaign_id=self.campaign_id,
                state=st,
                history_limit=inp.history_limit,
                cell_workflow=inp.cell_workflow,
                cell_task_queue=inp.cell_task_queue,
            )
        )

    def _child_id(self, cid: str, attempt: int) -> str:
        return f"{self.campaign_id}.cell.{cid}.{attempt}"

    async def _ask_to_report(self, cid: str) -> bool:
        """Tell a running cell to report to the campaign's workflow id; False if it has closed."""
        try:
            await workflow.get_external_workflow_handle(self._child_id(cid, self.book.attempt(cid))).signal(
                REPORT_TO_CAMPAIGN
            )
            return True
        except FailureError:
            return False

    def cell_finished(self, report: CellReport, result: RawValue) -> None:
        if self._claim(report.cell_id, report.attempt):
            asyncio.create_task(self._complete_cell(report.cell_id, report.attempt, result, None))

    def _claim(self, cid: str, attempt: int) -> bool:
        """The first report of a running attempt wins (a cell may report by signal and by its
        child completion both); later ones, and stale attempts, are ignored."""
        if cid not in self.running or cid in self.completing or self.book.attempt(cid) != attempt:
            return False
        self.completing.add(cid)
        return True

    async def _probe_inherited(self, every_s: float = PROBE_INHERITED_S) -> None:
        """A cell inherited across continue-as-new reports by signal; one whose workflow closed
        without reporting (terminated, timed out, cancelled by someone else) would hold its hosts
        forever. Probe them now and then: a signal to a closed workflow fails, and a report
        always lands before its sender closes."""
        while True:
            await workflow.sleep(every_s)
            for cid in list(self.inherited):
                if cid in self.inherited and not await self._ask_to_report(cid):
                    self._lost(cid, "cell workflow closed without reporting its result (terminated or timed out)")
            if not self.inherited:
                return

    def _lost(self, cid: str, why: str) -> None:
        """A running cell whose workflow is gone without a result: an error, like a failed child."""
        attempt = self.book.attempt(cid)
        if self._claim(cid, attempt):
            result = self.skipped_result(cid, why)
            result.checks = [CheckResult(c.check, Grade.ERROR, c.reason) for c in result.checks]
            asyncio.create_task(self._complete_cell(cid, attempt, None, result))

    async def _cancel_inherited(self, cid: str) -> None:
        try:
            await workflow.get_external_workflow_handle(self._child_id(cid, self.book.attempt(cid))).cancel()
        except FailureError:  # closed: it reported already, or never will
            self._lost(cid, "campaign cancelled; the cell workflow had closed without reporting")

    async def cancel_cells(self) -> None:
        for cid, t in self.tasks.items():
            if cid not in self.completing:  # a cell being stored finishes storing
                t.cancel()
        # inherited cells are not this run's children: cancel them by id; they clean up,
        # release their hosts and report like any finishing cell (probed each minute, in
        # case one ends without a report)
        if self.inherited:
            await asyncio.gather(*map(self._cancel_inherited, list(self.inherited)))
            asyncio.create_task(self._probe_inherited(PROBE_CANCELLED_S))
        await workflow.wait_condition(lambda: not self.running)
        for cid in self.pool.ids():
            self.pool.remove(cid)
            self.book.set_done(cid, CellOutcome(Grade.SKIPPED, reason="campaign cancelled"))

    # -- starting and completing cells: from the pool, results by child completion or by report ----
    def start_ready_cells(self) -> None:
        hosts = self._host_map()
        load: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        for cid, a in self.running.items():
            load[a.source_host] = load.get(a.source_host, 0) + 1
            load[a.target_host] = load.get(a.target_host, 0) + 1
            s, t, _ = self.catalog.where(cid)
            for k in {self.kinds[s], self.kinds[t]}:
                by_kind[k] = by_kind.get(k, 0) + 1
        self._skip_dead_platforms()
        picks = scheduling.schedule_pool(
            self.pool,
            hosts,
            self.st.platform_hosts,
            self.kinds,
            scheduling.LabState(load, by_kind, len(self.running)),
            self.limits(),
            unavailable=frozenset(self.st.unavailable_hosts),
        )
        for a in picks:
            self.pool.remove(a.cell_id)
            self.running[a.cell_id] = a
            attempt = self.book.next_attempt(a.cell_id)
            self.tasks[a.cell_id] = asyncio.create_task(self._run_cell(a, attempt))

    def _host_map(self) -> dict:
        if self._hosts_of is None or self._hosts_of[0] is not self.st.hosts:
            self._hosts_of = (self.st.hosts, {h.name: h for h in self.st.hosts})
        return self._hosts_of[1]

    def _skip_dead_platforms(self) -> None:
        """Every host of a platform is out of service: its pending cells would wait forever. Checked
        when the set of hosts out of service changes, not on every pass."""
        key = (len(self.st.unavailable_hosts), sum(len(v) for v in self.st.platform_hosts.values()))
        if key == self._dead_checked:
            return
        self._dead_checked = key
        out = set(self.st.unavailable_hosts)
        dead = {p for p in self.kinds if not set(self.st.platform_hosts.get(p, [])) - out}
        if not dead:
            return
        for cid in self.pool.ids():
            s, t, _ = self.catalog.where(cid)
            gone = [p for p in (s, t) if p in dead]
            if gone:
                self.pool.remove(cid)
                self.book.set_done(
                    cid, CellOutcome(Grade.SKIPPED, reason=f"no healthy host left for platform(s) {gone}")
                )

    async def _run_cell(self, a: scheduling.Assignment, attempt: int) -> None:
        cid = a.cell_id
        cell = self.cells[cid]
        inp = self.cell_input(cell, a, self._host_map(), attempt)
        raw: RawValue | None = None
        result: CellResult | None = None
        self.starting.add(cid)
        try:
            handle = await workflow.start_child_workflow(
                self.cell_workflow,
                inp,
                result_type=RawValue,
                id=self._child_id(cid, attempt),
                task_queue=self.cell_task_queue or None,
                # it may outlive this run: a continue-as-new hands it over instead of waiting
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                # on cancel, wait for the child's cleanup/release instead of abandoning it
                cancellation_type=workflow.ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            self.starting.discard(cid)
            raw = await handle
        except ChildWorkflowError as e:
            if self._cancelled_by_us(e):
                result = self.skipped_result(cid, "campaign cancelled")
            else:  # the cell workflow itself failed (a bug, not interop)
                result = self.skipped_result(cid, f"cell workflow failed: {e.cause or e}")
                result.checks = [CheckResult(c.check, Grade.ERROR, c.reason) for c in result.checks]
        except asyncio.CancelledError:
            # the campaign was cancelled and so was the child (its cleanup ran); record it
            result = self.skipped_result(cid, "campaign cancelled")
        finally:
            self.starting.discard(cid)
        if self._claim(cid, attempt):  # not when the cell reported by signal first
            await self._complete_cell(cid, attempt, raw, result)

    def _cancelled_by_us(self, e: ChildWorkflowError) -> bool:
        """A child that ended Canceled because this campaign is cancelling. A cell cancelled while a
        stage runs completes with skipped grades itself; one the cancel reached before its first
        workflow task had started (CI saw it: the cell was started a few ms before the cancel)
        ends Canceled, having run nothing, and was graded an error before the patch."""
        return (
            self.cancel_requested and isinstance(e.cause, CancelledError) and workflow.patched(CANCELLED_CHILD_SKIPPED)
        )

    async def _complete_cell(self, cid: str, attempt: int, raw: RawValue | None, result: CellResult | None) -> None:
        """Store a claimed cell's result, mark it done (or run it elsewhere if its host went bad)."""
        try:
            outcome, stages = read_child_result(raw) if raw is not None else read_result(result)
            bad_host = unhealthy_host(stages)
            if bad_host and attempt < MAX_RESCHEDULES:
                # the inventory took a host out of service mid-cell: run the cell elsewhere
                async with self.lock:
                    if bad_host not in self.st.unavailable_hosts:
                        self.st.unavailable_hosts.append(bad_host)
                    self._forget(cid)
                    self._queue(cid)
                    self.dirty = True
                return
            s, t, _ = self.catalog.where(cid)
            kinds = (self.kinds[s], self.kinds[t])
            args = (
                [StoreResultRequest(self.campaign_id, None, *kinds), raw]
                if raw is not None
                # both arguments always: with one, the SDK decodes none of them (the activity
                # declares two) and the activity gets a dict
                else [StoreResultRequest(self.campaign_id, result, *kinds), None]
            )
            # persist before marking done: the campaign may finish as soon as the last cell is done.
            # The progress report (counting this cell done) goes out alongside: two local
            # activities resolved in one activation instead of two in a row.
            counts = self.counts()
            counts["running"] -= 1
            counts["done"] += 1
            counts[outcome.grade.value] += 1
            counts["cached"] += outcome.cached
            await asyncio.gather(
                workflow.execute_local_activity(
                    "store_result", args=args, start_to_close_timeout=SHORT, retry_policy=ACT_RETRY
                ),
                self._publish(counts=counts),
            )
            async with self.lock:
                self._forget(cid)
                self.book.set_done(cid, outcome)
                self.dirty = True
        finally:
            self.completing.discard(cid)

    def _forget(self, cid: str) -> None:
        self.running.pop(cid, None)
        self.tasks.pop(cid, None)
        self.inherited.discard(cid)

    def quiet(self) -> bool:
        return not self.completing and super().quiet()
