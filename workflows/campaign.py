"""The campaign: expands the matrix, schedules cells onto leased hosts as child workflows, takes
operator control, and continues-as-new before its history grows past Temporal's limits.

Idiom from temporalio/samples-python (message_passing/safe_message_handlers): all state that crosses
continue-as-new lives in one dataclass (``CampaignState``); ``@workflow.init`` builds it before any
handler runs; one update per operator action, each with its own request/result dataclass and a
validator (``domain.control``) that refuses bad requests before they reach history; a lock guards
state touched across awaits; handlers finish before continue-as-new.

``run`` is four steps: restore (state, inventory), schedule (start what can start, watch for a
stall), continue (continue-as-new once history is long), finish (cancel, sweep, result).

Continue-as-new without a drain (patch ``reattach-across-continue-as-new``, replay set v5 on):
Temporal does not carry child workflows over a continue-as-new, so campaigns of replay sets v2-v4
stopped starting cells and waited for every running one to end first (+2.2 % of a month-long
campaign). Now cells run with ``ParentClosePolicy.ABANDON``; before continuing, the run asks each
of its running cells to report to the campaign by workflow id (``workflows.reporting``), and the
next run re-attaches to them by id: it keeps their hosts busy and takes their results from the
``cell_finished`` signal. A cell closed without reporting (terminated) is found by a probe.

What a v5 run keeps per cell is a ``domain.cellbook.CellBook`` (grade code, attempts, reason
index), pending cells live in a ``scheduling.PendingPool``; both cost O(1) per completion and
cross continue-as-new (and end the campaign) as ~2 bytes per cell, so 50,000 cells stay far below
Temporal's payload limits. Runs of v2-v4 keep their own code paths (``*_legacy`` / ``schedule_v4``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError, ChildWorkflowError, FailureError

with workflow.unsafe.imports_passed_through():
    from domain import control, inventory_delta, matrix, scheduling
    from domain.cellbook import CellBook, CellCatalog
    from domain.control import (
        AddCellsRequest,
        CancelRequest,
        ConcurrencyRequest,
        ControlResult,
        ControlView,
        PauseRequest,
        ResumeRequest,
        RetryRequest,
        SkipRequest,
        SwapHostRequest,
    )
    from domain.messages import (
        RESULTS_PAGE_MAX,
        CampaignInput,
        CampaignState,
        CellInput,
        CellReport,
        InventoryDelta,
        InventoryRefreshRequest,
        InventoryRequest,
        InventorySnapshot,
        ProgressReport,
        ResultsPage,
        ResultsPageRequest,
        RunningCell,
        StoreResultRequest,
        SweepRequest,
    )
    from domain.model import CampaignResult, Cell, CellOutcome, CellResult, CellSummary, CheckResult, Grade
    from workflows import search
    from workflows.reporting import CELL_FINISHED, REPORT_TO_CAMPAIGN

SHORT = timedelta(seconds=60)
ACT_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30), non_retryable_error_types=["InventoryError"])
APPLIED_KEYS_KEPT = 500  # bounded: idempotency keys older than this are assumed delivered
MAX_RESCHEDULES = 3  # attempts of one cell on other hosts after a host turned unhealthy
PUBLISH_RETRY = RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=2))
# a refresh that keeps failing is given up until the next interval: the campaign keeps the view it has
REFRESH_RETRY = RetryPolicy(
    maximum_attempts=3, maximum_interval=timedelta(seconds=30), non_retryable_error_types=["InventoryError"]
)
# a cell inherited across continue-as-new that has not reported for this long is probed: did its
# workflow close without reporting (terminated, timed out)?
PROBE_INHERITED_S = 6 * 3600
PROBE_CANCELLED_S = 60  # once cancelled, they should be done within minutes
# workflow.patched ids
QUIET_BEFORE_CLOSE = "wait-local-activities-before-close"  # replay set v3 on
WATCHDOG = "watchdog-publishes-stall"  # replay set v4 on
REATTACH = "reattach-across-continue-as-new"  # replay set v5 on (compact state, no drain)
SEARCH_ATTRIBUTES = "search-attributes-follow-progress"  # replay set v6 on
CANCEL_REQUEST_FINISHES = "cancel-request-finishes-the-campaign"  # replay set v6 on
SEARCH_EVERY_S = 60.0  # at most one visibility upsert a minute while the status stays the same
INVENTORY_REFRESH = "inventory-refresh"  # replay set v6 on: the inventory is refreshed every plan.refresh_interval_s()
# replay set v6 on, asked only by campaigns with hosts at sites that have workers of their own:
# the leak sweep runs once per site, on that site's queue, over that site's hosts
SWEEP_PER_SITE = "sweep-per-site"
# replay set v7 on, asked only when a cancelled campaign's child ended Canceled (the cancel reached
# it before its first task, so it never ran its own cancel handling): skipped, not an error
CANCELLED_CHILD_SKIPPED = "cancelled-child-is-skipped"
# deprecated: only the retired replay set v1 predates them (tests/replay/README.md)
SWEEP_ON_EVERY_END = "sweep-on-every-end"
STORE_RESULT_LOCAL = "store-result-local"


def _unhealthy_host(stages: list[tuple[str, str, str]]) -> str:
    """The host a cell gave up on because the inventory marked it unhealthy, if any."""
    for stage, status, reason in stages:
        if stage == "reserve" and status == "error" and reason.startswith("HostUnhealthy"):
            return reason.split("host ", 1)[1].split(" ", 1)[0] if "host " in reason else ""
    return ""


def _read_result(r: CellResult) -> tuple[CellOutcome, list[tuple[str, str, str]]]:
    return CellOutcome.of(r), [(x.stage, x.status, x.reason) for x in r.stages]


def _read_child_result(raw: RawValue) -> tuple[CellOutcome, list[tuple[str, str, str]]]:
    """Outcome and stage list of a child's CellResult, read as plain JSON: typed decoding of a
    full result costs ~8 ms inside the sandbox, which dominated a 2,000-cell campaign."""
    if raw.payload.metadata.get("encoding") != b"json/plain":  # a custom data converter: typed path
        return _read_result(workflow.payload_converter().from_payload(raw.payload, CellResult))
    doc = json.loads(raw.payload.data)
    stages = [(x["stage"], x["status"], x.get("reason", "")) for x in doc.get("stages", [])]
    return CellOutcome.of_json(doc), stages


@dataclass
class SteerRequest:
    """The single operator update of earlier releases, kept so that older CLIs and recorded
    histories still work; it forwards to the per-action updates below. New callers use those."""

    action: str  # pause | resume | cancel | retry | skip | swap_host | add_cells | set_concurrency
    request_id: str = ""
    cells: list[str] = field(default_factory=list)  # retry/skip: cell ids ("*failed" = all failed)
    host: str = ""
    replacement: str = ""
    add: list[list[str]] = field(default_factory=list)
    max_cells: int = 0


@dataclass
class SteerResponse:
    applied: bool
    message: str


def _typed(req: SteerRequest):
    """The per-action request a legacy SteerRequest stands for."""
    rid = req.request_id
    if req.action == "pause":
        return PauseRequest(rid)
    if req.action == "resume":
        return ResumeRequest(rid)
    if req.action == "cancel":
        return CancelRequest(rid)
    if req.action == "retry":
        failed = "*failed" in req.cells
        return RetryRequest([c for c in req.cells if c != "*failed"], failed=failed, request_id=rid)
    if req.action == "skip":
        return SkipRequest(list(req.cells), rid)
    if req.action == "swap_host":
        return SwapHostRequest(req.host, req.replacement, rid)
    if req.action == "add_cells":
        return AddCellsRequest([list(t) for t in req.add], rid)
    if req.action == "set_concurrency":
        return ConcurrencyRequest(req.max_cells, rid)
    raise control.Refused(f"unknown action {req.action!r}")


@dataclass
class Progress:
    campaign_id: str
    name: str
    status: str
    counts: dict[str, int]
    running: dict[str, str]  # cell id -> "src_host -> tgt_host"
    paused: bool
    generation: int
    history_length: int
    stall_reason: str = ""  # why nothing can start although cells are pending (the watchdog)


@workflow.defn
class CampaignWorkflow:
    @workflow.init
    def __init__(self, inp: CampaignInput) -> None:
        self.plan = inp.plan
        self.cell_workflow = inp.cell_workflow
        self.cell_task_queue = inp.cell_task_queue
        self.campaign_id = inp.campaign_id or workflow.info().workflow_id
        self.st = inp.state or CampaignState(started_at=workflow.now().isoformat())
        for cid, r in self.st.results.items():  # legacy state: fold full results into outcomes
            self.st.done.setdefault(cid, CellOutcome.of(r))
        self.st.results = {}
        self.running: dict[str, scheduling.Assignment] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.lock = asyncio.Lock()
        self.cancel_requested = False
        self.dirty = True
        self.status = "starting"
        self.stall_reason = ""
        self._est: dict[str, float] = {}  # cell id -> estimated seconds (scheduling only)
        self._local_in_flight = 0  # progress local activities not yet resolved
        self.kinds = {p.name: p.kind for p in inp.plan.platforms}
        # set once the run is closing (finish, continue-as-new): the refresh loop schedules nothing more
        self.closing = False
        # Runs recorded before replay set v5 keep their whole state in ``st`` and drain before
        # continuing as new; a new run (and every run it continues into) takes the v5 path.
        self.v5 = workflow.patched(REATTACH)
        self._searched: tuple[str, float] = ("", 0.0)  # (status, time) of the last visibility upsert
        if self.v5:
            self._init_v5()
        else:
            self.cells: Mapping[str, Cell] = {c.id: c for c in matrix.expand(inp.plan) + self.st.extra_cells}

    def _init_v5(self) -> None:
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

    # -- queries --------------------------------------------------------------------------------
    @workflow.query
    def progress(self) -> Progress:
        return Progress(
            campaign_id=self.campaign_id,
            name=self.plan.name,
            status=self.status,
            counts=self._counts(),
            running={c: f"{a.source_host} -> {a.target_host}" for c, a in self.running.items()},
            paused=self.st.paused,
            generation=self.st.generation,
            history_length=workflow.info().get_current_history_length(),
            stall_reason=self.stall_reason,
        )

    @workflow.query
    def results(self) -> list[CellSummary]:
        """One short row per finished cell; full results are in the result store. Unbounded (a
        50,000-cell campaign answers ~15 MB): use ``results_page`` or ``snapshot``."""
        return self._summary()

    @workflow.query
    def results_page(self, req: ResultsPageRequest) -> ResultsPage:
        """Up to ``RESULTS_PAGE_MAX`` rows of finished cells from ``req.offset``, in matrix order."""
        limit = max(1, min(req.limit, RESULTS_PAGE_MAX))
        offset = max(0, req.offset)
        if self.v5:
            total = self.book.done
            rows = list(itertools.islice(self.book.rows(self.catalog.places), offset, offset + limit))
        else:
            every = self._summary()
            total, rows = len(every), every[offset : offset + limit]
        nxt = offset + len(rows) if offset + len(rows) < total else -1
        return ResultsPage(rows, total, nxt)

    @workflow.query
    def snapshot(self) -> CampaignResult:
        """The campaign as it stands, in the form of its final result (bounded: ``shape`` and
        ``book``, no row per cell); ``result_store.attach`` reads it like a finished one."""
        res = CampaignResult(
            campaign_id=self.campaign_id,
            name=self.plan.name,
            hosts=self.st.hosts,
            status=self.status,
            started_at=self.st.started_at,
        )
        if self.v5:
            res.shape, res.book = self.catalog.shape(), self.book.encode()
        else:
            res.summary = self._summary()
        return res

    def _summary(self) -> list[CellSummary]:
        if self.v5:
            return list(self.book.rows(self.catalog.places))
        rows = []
        for cid, c in self.cells.items():
            o = self.st.done.get(cid)
            if o is not None:
                rows.append(CellSummary(cid, c.source, c.target, c.image, o.grade, o.cached, o.reason))
        return rows

    def _counts(self) -> dict[str, int]:
        if self.v5:  # kept as the cells finish: no pass over every cell per publish
            return {
                "total": len(self.catalog),
                "pending": len(self.pool),
                "running": len(self.running),
                "done": self.book.done,
                **self.book.grade_counts(),
            }
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

    # -- operator control: one update per action ------------------------------------------------
    def _view(self) -> ControlView:
        if self.v5:
            return self._view_v5()
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

    def _view_v5(self) -> ControlView:
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

    async def _once(self, request_id: str, apply: Callable[[], ControlResult]) -> ControlResult:
        """Apply an operator action at most once per request id (a retried CLI call is a no-op)."""
        async with self.lock:
            if request_id and request_id in self.st.applied_updates:
                return ControlResult(False, f"request {request_id} already applied")
            result = apply()
            if request_id:
                self.st.applied_updates = (self.st.applied_updates + [request_id])[-APPLIED_KEYS_KEPT:]
            self.dirty = True
            return result

    @workflow.update
    async def pause(self, req: PauseRequest) -> ControlResult:
        return await self._once(req.request_id, self._pause)

    @pause.validator
    def _check_pause(self, req: PauseRequest) -> None:
        control.check_open(self._view())

    def _pause(self) -> ControlResult:
        self.st.paused = True
        return ControlResult(True, "paused: running cells finish, no new cells start")

    @workflow.update
    async def resume(self, req: ResumeRequest) -> ControlResult:
        return await self._once(req.request_id, self._resume)

    @resume.validator
    def _check_resume(self, req: ResumeRequest) -> None:
        control.check_open(self._view())

    def _resume(self) -> ControlResult:
        self.st.paused = False
        return ControlResult(True, "resumed")

    @workflow.update
    async def cancel(self, req: CancelRequest) -> ControlResult:
        return await self._once(req.request_id, self._cancel)

    @cancel.validator
    def _check_cancel(self, req: CancelRequest) -> None:
        control.check_open(self._view())

    def _cancel(self) -> ControlResult:
        self.cancel_requested = True
        return ControlResult(True, "cancelling: running cells clean up and release their hosts")

    @workflow.update
    async def set_concurrency(self, req: ConcurrencyRequest) -> ControlResult:
        return await self._once(req.request_id, lambda: self._set_concurrency(req))

    @set_concurrency.validator
    def _check_concurrency(self, req: ConcurrencyRequest) -> None:
        control.check_concurrency(self._view(), req)

    def _set_concurrency(self, req: ConcurrencyRequest) -> ControlResult:
        self.st.max_cells = req.max_cells
        return ControlResult(True, f"max_cells={req.max_cells}")

    @workflow.update
    async def retry(self, req: RetryRequest) -> ControlResult:
        return await self._once(req.request_id, lambda: self._retry(req))

    @retry.validator
    def _check_retry(self, req: RetryRequest) -> None:
        control.check_retry(self._view(), req)

    def _retry(self, req: RetryRequest) -> ControlResult:
        requeued = []
        if self.v5:
            for c in control.retry_targets(self._view(), req):
                if c in self.running or c in self.pool:
                    continue
                self.book.clear(c)
                self._queue(c)
                requeued.append(c)
            return ControlResult(True, f"requeued {len(requeued)} cells", requeued)
        for c in control.retry_targets(self._view(), req):
            if c in self.running or c in self.st.pending:
                continue
            self.st.done.pop(c, None)
            self.st.pending.append(c)
            requeued.append(c)
        return ControlResult(True, f"requeued {len(requeued)} cells", requeued)

    @workflow.update
    async def skip(self, req: SkipRequest) -> ControlResult:
        return await self._once(req.request_id, lambda: self._skip(req))

    @skip.validator
    def _check_skip(self, req: SkipRequest) -> None:
        control.check_skip(self._view(), req)

    def _skip(self, req: SkipRequest) -> ControlResult:
        done = []
        if self.v5:
            for c in req.cells:
                if c in self.pool:
                    self.pool.remove(c)
                    self.book.set_done(c, CellOutcome(Grade.SKIPPED, reason=control.OPERATOR_SKIP))
                    done.append(c)
            return ControlResult(True, f"skipped {len(done)} cells", done)
        for c in req.cells:
            if c in self.st.pending:
                self.st.pending.remove(c)
                self.st.done[c] = CellOutcome(Grade.SKIPPED, reason=control.OPERATOR_SKIP)
                done.append(c)
        return ControlResult(True, f"skipped {len(done)} cells", done)

    @workflow.update
    async def swap_host(self, req: SwapHostRequest) -> ControlResult:
        return await self._once(req.request_id, lambda: self._swap_host(req))

    @swap_host.validator
    def _check_swap_host(self, req: SwapHostRequest) -> None:
        control.check_swap_host(self._view(), req)

    def _swap_host(self, req: SwapHostRequest) -> ControlResult:
        if req.host not in self.st.unavailable_hosts:
            self.st.unavailable_hosts.append(req.host)
        if req.replacement:
            for names in self.st.platform_hosts.values():
                if req.host in names and req.replacement not in names:
                    names.append(req.replacement)
        return ControlResult(
            True,
            f"host {req.host} out of scheduling"
            + (f", {req.replacement} takes its platforms" if req.replacement else ""),
        )

    @workflow.update
    async def add_cells(self, req: AddCellsRequest) -> ControlResult:
        return await self._once(req.request_id, lambda: self._add_cells(req))

    @add_cells.validator
    def _check_add_cells(self, req: AddCellsRequest) -> None:
        control.check_add_cells(self._view(), req)

    def _add_cells(self, req: AddCellsRequest) -> ControlResult:
        added = []
        for s, t, i in req.cells:
            cid = matrix.cell_id(s, t, i)
            if cid in self.cells:
                continue
            cell = Cell(cid, s, t, i, list(self.plan.checks), matrix.fingerprint(self.plan, s, t, i))
            self.st.extra_cells.append(cell)
            added.append(cid)
            if self.v5:
                self.catalog.add(cell)
                self.book.add(cid)
                self._by_platform = None
                self._queue(cid)
                continue
            self.cells[cid] = cell
            self.st.pending.append(cid)
        return ControlResult(True, f"added {len(added)} cells", added)

    @workflow.update
    async def steer(self, req: SteerRequest) -> SteerResponse:
        """Legacy: one update for every action (older CLIs, recorded histories)."""
        typed = _typed(req)
        handler = {
            PauseRequest: lambda: self._pause(),
            ResumeRequest: lambda: self._resume(),
            CancelRequest: lambda: self._cancel(),
            RetryRequest: lambda: self._retry(typed),
            SkipRequest: lambda: self._skip(typed),
            SwapHostRequest: lambda: self._swap_host(typed),
            AddCellsRequest: lambda: self._add_cells(typed),
            ConcurrencyRequest: lambda: self._set_concurrency(typed),
        }[type(typed)]
        r = await self._once(req.request_id, handler)
        return SteerResponse(r.applied, r.message)

    @steer.validator
    def _check_steer(self, req: SteerRequest) -> None:
        typed = _typed(req)
        v = self._view()
        {
            PauseRequest: lambda: control.check_open(v),
            ResumeRequest: lambda: control.check_open(v),
            CancelRequest: lambda: control.check_open(v),
            RetryRequest: lambda: control.check_retry(v, typed),
            SkipRequest: lambda: control.check_skip(v, typed),
            SwapHostRequest: lambda: control.check_swap_host(v, typed),
            AddCellsRequest: lambda: control.check_add_cells(v, typed),
            ConcurrencyRequest: lambda: control.check_concurrency(v, typed),
        }[type(typed)]()

    def _skipped_result(self, cid: str, reason: str) -> CellResult:
        c = self.cells[cid]
        return CellResult(
            cell_id=cid,
            source=c.source,
            target=c.target,
            image=c.image,
            checks=[CheckResult(k, Grade.SKIPPED, reason) for k in c.checks],
            stages=[],
            fingerprint=c.fingerprint,
        )

    # -- run: restore, schedule, continue, finish -----------------------------------------------
    @workflow.run
    async def run(self, inp: CampaignInput) -> CampaignResult:
        try:
            await self._restore()
            while True:
                await workflow.wait_condition(lambda: self.dirty or self.cancel_requested)
                step = await self._schedule(inp)
                if step == "finish":
                    break
                if step == "continue":
                    await (self._hand_over_and_continue(inp) if self.v5 else self._drain_or_continue(inp))
        except asyncio.CancelledError:
            # Temporal's own cancel (`temporal workflow cancel`, the Web UI): end like the cancel
            # update does (cells cancelled and cleaned up, leases released, leaks swept, the rest
            # skipped), then end as cancelled. Without this the cells, abandoned across
            # continue-as-new from v5 on, would keep running and holding their hosts.
            if not workflow.patched(CANCEL_REQUEST_FINISHES):
                raise
            self.cancel_requested = True
            await self._finish()
            raise
        return await self._finish()

    async def _restore(self) -> None:
        """First run: snapshot the inventory; a continued run already carries it (and, from v5 on,
        the cells still running, whose reports it now waits for)."""
        if not self.st.hosts:
            await self._load_inventory()
        self.status = "running"
        if self.v5 and self.inherited:
            asyncio.create_task(self._probe_inherited())
        interval = self.plan.refresh_interval_s()
        # Patched: runs recorded before it (replay sets v2-v5) never refreshed their inventory.
        if self.v5 and interval > 0 and workflow.patched(INVENTORY_REFRESH):
            asyncio.create_task(self._refresh_inventory_every(interval))
        await self._publish()

    def _selections(self) -> dict[str, dict[str, str]]:
        return {p.name: {**p.select, "kind": p.kind} for p in self.plan.platforms}

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
                        plan.inventory, self._selections(), netbox=dict(plan.netbox), cursor=self.st.inventory_cursor
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

    def _has_pending(self) -> bool:
        return bool(len(self.pool)) if self.v5 else bool(self.st.pending)

    async def _schedule(self, inp: CampaignInput) -> str:
        """One pass: start what can start. Returns finish | continue | wait."""
        stalled_now = ""
        async with self.lock:
            self.dirty = False
            if self.cancel_requested or (not self._has_pending() and not self.running):
                return "finish"
            draining = (
                workflow.info().get_current_history_length() > inp.history_limit
                or workflow.info().is_continue_as_new_suggested()
            )
            if not self.st.paused and not draining:
                self._start_ready_cells_v5() if self.v5 else self._start_ready_cells()
            self.status = "paused" if self.st.paused else ("draining" if draining else "running")
            reason = self._stall_reason(draining)
            if reason != self.stall_reason:
                self.stall_reason = stalled_now = reason
            if reason:
                self.status = "stalled"
            if draining and (self.v5 or not self.running):  # v5: running cells are handed over
                return "continue"
        if stalled_now and workflow.patched(WATCHDOG):
            # visible in the progress query and as a metric (an alert), not silence
            workflow.logger.warning("campaign stalled: %s", stalled_now)
            await self._publish()
        return "wait"

    def _stall_reason(self, draining: bool) -> str:
        """Pending cells, nothing running, nothing schedulable: why (the watchdog)."""
        if self.st.paused or draining or self.running or not self._has_pending():
            return ""
        return scheduling.why_unschedulable(
            self.pool.cells() if self.v5 else [self.cells[c] for c in self.st.pending],
            {h.name: h for h in self.st.hosts},
            self.st.platform_hosts,
            {p.name: p.kind for p in self.plan.platforms},
            self._limits(),
            frozenset(self.st.unavailable_hosts),
        )

    async def _drain_or_continue(self, inp: CampaignInput) -> None:
        """Every cell has finished: continue as new with the compact state (never returns)."""
        # Continue-as-new must be the last command of its task: a progress local activity that
        # resolved in the same task put its marker after it, and the task failed until the timing
        # changed. So let local activities and update handlers finish first (outside the lock,
        # which handlers take; resolves in the same task when nothing is in flight). Patched: runs
        # recorded before it continued at once.
        if workflow.patched(QUIET_BEFORE_CLOSE):
            await workflow.wait_condition(self._quiet)
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

    async def _hand_over_and_continue(self, inp: CampaignInput) -> None:
        """v5: continue as new while cells run (never returns unless a cancel arrived).

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
            lambda: all(c not in self.running for c in closed) and not self.completing and self._quiet()
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

    @workflow.signal(name=CELL_FINISHED)
    def cell_finished(self, report: CellReport, result: RawValue) -> None:
        """A cell this run inherited (or one that heard the hand-over before it finished) is done;
        ``result`` is its CellResult, passed to the store untouched."""
        if self.v5 and self._claim(report.cell_id, report.attempt):
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
            result = self._skipped_result(cid, why)
            result.checks = [CheckResult(c.check, Grade.ERROR, c.reason) for c in result.checks]
            asyncio.create_task(self._complete_cell(cid, attempt, None, result))

    async def _cancel_inherited(self, cid: str) -> None:
        try:
            await workflow.get_external_workflow_handle(self._child_id(cid, self.book.attempt(cid))).cancel()
        except FailureError:  # closed: it reported already, or never will
            self._lost(cid, "campaign cancelled; the cell workflow had closed without reporting")

    async def _sweep(self) -> list[str]:
        """Destroy leaked VMs and free leftover leases: one call on the campaign's queue, plus, for
        hosts at sites with workers of their own, one per site on that site's queue (a site's
        worker only ever opens its own site's hosts). Every call frees the campaign's leases."""
        hosts = self.st.hosts
        queues = sorted({h.task_queue for h in hosts if h.task_queue})
        calls: list[tuple[str, list]] = [("", hosts)]
        if queues and workflow.patched(SWEEP_PER_SITE):
            calls = [("", [h for h in hosts if not h.task_queue])]
            calls += [(q, [h for h in hosts if h.task_queue == q]) for q in queues]
        removed: list[str] = []
        for queue, group in calls:
            removed += await workflow.execute_activity(
                "sweep_leaks",
                SweepRequest(self.campaign_id, self.plan.inventory, group, netbox=dict(self.plan.netbox)),
                result_type=list[str],
                start_to_close_timeout=timedelta(minutes=30),
                retry_policy=ACT_RETRY,
                **({"task_queue": queue} if queue else {}),
            )
        return removed

    async def _finish(self) -> CampaignResult:
        self.closing = True
        if self.cancel_requested and self.v5:
            self.status = "cancelling"
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
        elif self.cancel_requested:
            self.status = "cancelling"
            for t in self.tasks.values():
                t.cancel()
            await workflow.wait_condition(lambda: not self.running)
            for cid in list(self.st.pending):
                self.st.done[cid] = CellOutcome(Grade.SKIPPED, reason="campaign cancelled")
            self.st.pending.clear()
        # Sweep on every ending, not only on cancel: a cell whose cleanup exhausted its retries
        # may have left a VM or a lease behind.
        if not self.cancel_requested:
            workflow.deprecate_patch(SWEEP_ON_EVERY_END)
        removed = await self._sweep()
        if removed:
            workflow.logger.warning("sweeper removed leaked VMs: %s", removed)
        self.status = "cancelled" if self.cancel_requested else "completed"
        self.stall_reason = ""
        await self._publish(running=False)
        if workflow.patched(QUIET_BEFORE_CLOSE):  # completing must be the last command too
            await workflow.wait_condition(self._quiet)
        if self.v5:  # bounded: no row per cell (result_store.summary_rows reads shape + book)
            return CampaignResult(
                campaign_id=self.campaign_id,
                name=self.plan.name,
                hosts=self.st.hosts,
                status=self.status,
                started_at=self.st.started_at,
                finished_at=workflow.now().isoformat(),
                shape=self.catalog.shape(),
                book=self.book.encode(),
            )
        return CampaignResult(
            campaign_id=self.campaign_id,
            name=self.plan.name,
            summary=self._summary(),
            hosts=self.st.hosts,
            status=self.status,
            started_at=self.st.started_at,
            finished_at=workflow.now().isoformat(),
        )

    def _limits(self):
        limits = self.plan.concurrency
        if self.st.max_cells:
            limits = type(limits)(max_cells=self.st.max_cells, per_kind=limits.per_kind)
        return limits

    async def _load_inventory(self) -> None:
        plan = self.plan
        snap = await workflow.execute_activity(
            "load_inventory",
            InventoryRequest(plan.inventory, self._selections(), netbox=dict(plan.netbox)),
            result_type=InventorySnapshot,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=ACT_RETRY,
        )
        self.st.hosts = snap.hosts
        self.st.platform_hosts = snap.platform_hosts
        self.st.inventory_cursor = snap.cursor
        if self.v5:
            for cid in list(self.book.not_done_ids()):
                s, t, _ = self.catalog.where(cid)
                missing = [p for p in (s, t) if not snap.platform_hosts.get(p)]
                if missing:  # can never run: say so instead of waiting forever
                    self.book.set_done(
                        cid, CellOutcome(Grade.SKIPPED, reason=f"no healthy host matches platform(s) {missing}")
                    )
                elif cid not in self.running:
                    self._queue(cid)
            return
        self.st.pending = [c for c in self.cells if c not in self.st.done]
        # cells whose platform has no host can never run: say so instead of waiting forever
        for cid in list(self.st.pending):
            c = self.cells[cid]
            missing = [p for p in (c.source, c.target) if not snap.platform_hosts.get(p)]
            if missing:
                self.st.pending.remove(cid)
                self.st.done[cid] = CellOutcome(Grade.SKIPPED, reason=f"no healthy host matches platform(s) {missing}")

    def _start_ready_cells(self) -> None:
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
        limits = self._limits()
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

    def _cell_input(self, cell: Cell, a: scheduling.Assignment, hosts: dict, attempt: int) -> CellInput:
        """What a cell workflow gets: one builder for every campaign path (a field added here
        reaches every cell; the remediation ladder once went missing from one path)."""
        plan = self.plan
        return CellInput(
            campaign_id=self.campaign_id,
            cell=cell,
            source=plan.platform(cell.source),
            target=plan.platform(cell.target),
            image=plan.image(cell.image),
            source_host=hosts[a.source_host],
            target_host=hosts[a.target_host],
            inventory=plan.inventory,
            retry=plan.retry,
            export_format=plan.export_format,
            attempt=attempt,
            remediate=list(plan.remediate),
        )

    async def _run_cell(self, a: scheduling.Assignment, hosts: dict) -> None:
        cell = self.cells[a.cell_id]
        attempt = self.st.attempts[a.cell_id]
        inp = self._cell_input(cell, a, hosts, attempt)
        raw: RawValue | None = None
        result: CellResult | None = None
        try:
            # the result stays a raw payload: it goes to the store untouched, and the campaign
            # reads only its outcome (see _read_child_result)
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
            result = self._skipped_result(cell.id, f"cell workflow failed: {e.cause or e}")
            result.checks = [CheckResult(c.check, Grade.ERROR, c.reason) for c in result.checks]
        except asyncio.CancelledError:
            # the campaign was cancelled and so was the child (its cleanup ran); record it
            result = self._skipped_result(cell.id, "campaign cancelled")
        if raw is not None:
            outcome, stages = _read_child_result(raw)
        else:
            assert result is not None
            outcome, stages = _read_result(result)
        bad_host = _unhealthy_host(stages)
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

    # -- v5: cells from the pool, results by child completion or by report -----------------------
    def _start_ready_cells_v5(self) -> None:
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
            self._limits(),
            unavailable=frozenset(self.st.unavailable_hosts),
        )
        for a in picks:
            self.pool.remove(a.cell_id)
            self.running[a.cell_id] = a
            attempt = self.book.next_attempt(a.cell_id)
            self.tasks[a.cell_id] = asyncio.create_task(self._run_cell_v5(a, attempt))

    def _host_map(self) -> dict:
        if getattr(self, "_hosts_of", None) is None or self._hosts_of[0] is not self.st.hosts:
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

    async def _run_cell_v5(self, a: scheduling.Assignment, attempt: int) -> None:
        cid = a.cell_id
        cell = self.cells[cid]
        inp = self._cell_input(cell, a, self._host_map(), attempt)
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
                result = self._skipped_result(cid, "campaign cancelled")
            else:  # the cell workflow itself failed (a bug, not interop)
                result = self._skipped_result(cid, f"cell workflow failed: {e.cause or e}")
                result.checks = [CheckResult(c.check, Grade.ERROR, c.reason) for c in result.checks]
        except asyncio.CancelledError:
            # the campaign was cancelled and so was the child (its cleanup ran); record it
            result = self._skipped_result(cid, "campaign cancelled")
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
            outcome, stages = _read_child_result(raw) if raw is not None else _read_result(result)
            bad_host = _unhealthy_host(stages)
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
                else [StoreResultRequest(self.campaign_id, result, *kinds), None]  # both: see _run_cell
            )
            # persist before marking done: the campaign may finish as soon as the last cell is done.
            # The progress report (counting this cell done) goes out alongside: two local
            # activities resolved in one activation instead of two in a row.
            counts = self._counts()
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

    def _quiet(self) -> bool:
        if self.v5 and self.completing:
            return False
        return self._local_in_flight == 0 and workflow.all_handlers_finished()

    def _upsert_search_attributes(self, counts: dict[str, int], final: bool) -> None:
        """Keep Temporal visibility's view of the campaign (``workflows/search.py``) current, so
        ``campaign list -q "CrossvisorFail > 0"`` finds it. Only where the campaign was started with
        them (the namespace has them registered; upserting unknown ones fails the task), throttled
        to a status change, the end, or once a minute: each upsert is a history event."""
        if not search.registered(workflow.info().typed_search_attributes):
            return
        if not workflow.patched(SEARCH_ATTRIBUTES):
            return
        now = workflow.now().timestamp()
        last_status, last_t = self._searched
        if not final and self.status == last_status and now - last_t < SEARCH_EVERY_S:
            return
        self._searched = (self.status, now)
        workflow.upsert_search_attributes(search.updates(counts, self.status, self.plan.name))

    async def _publish(self, running: bool = True, counts: dict[str, int] | None = None) -> None:
        counts = counts or self._counts()
        self._upsert_search_attributes(counts, final=not running)
        # best effort: metrics must never hold up a campaign (nor its continue-as-new, which
        # waits for this), so a few quick attempts and then the error is only logged
        self._local_in_flight += 1
        try:
            await workflow.execute_local_activity(
                "publish_progress",
                ProgressReport(self.plan.name, counts, running, paused=self.st.paused, stalled=self.stall_reason),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=PUBLISH_RETRY,
            )
        except ActivityError as e:
            workflow.logger.warning("progress not published: %s", e.cause or e)
        finally:
            self._local_in_flight -= 1
