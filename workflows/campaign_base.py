"""What every generation of the campaign workflow shares: the run loop (restore, schedule,
continue, finish), the operator actions that do not depend on how cells are kept, the inventory
snapshot, the leak sweep and progress publishing.

A generation (``campaign_v4.py``, ``campaign_v5.py``) says how it keeps its cells (pending, done,
running), how it starts and completes them, and how it continues as new. ``CampaignWorkflow``
(``campaign.py``) picks one per run and forwards Temporal's handlers to it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from domain import matrix, scheduling
    from domain.control import (
        AddCellsRequest,
        ConcurrencyRequest,
        ControlResult,
        ControlView,
        RetryRequest,
        SkipRequest,
        SwapHostRequest,
    )
    from domain.messages import (
        RESULTS_PAGE_MAX,
        CampaignInput,
        CampaignState,
        CellInput,
        InventoryRequest,
        InventorySnapshot,
        ProgressReport,
        ResultsPage,
        ResultsPageRequest,
        SweepRequest,
    )
    from domain.model import CampaignResult, Cell, CellOutcome, CellResult, CellSummary, CheckResult, Grade
    from workflows import search

SHORT = timedelta(seconds=60)
ACT_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30), non_retryable_error_types=["InventoryError"])
APPLIED_KEYS_KEPT = 500  # bounded: idempotency keys older than this are assumed delivered
MAX_RESCHEDULES = 3  # attempts of one cell on other hosts after a host turned unhealthy
PUBLISH_RETRY = RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=2))
SEARCH_EVERY_S = 60.0  # at most one visibility upsert a minute while the status stays the same
# workflow.patched ids (tests/replay/README.md says where each one stands)
QUIET_BEFORE_CLOSE = "wait-local-activities-before-close"  # replay set v3 on
WATCHDOG = "watchdog-publishes-stall"  # replay set v4 on
REATTACH = "reattach-across-continue-as-new"  # replay set v5 on: campaign_v5.py, else campaign_v4.py
SEARCH_ATTRIBUTES = "search-attributes-follow-progress"  # replay set v6 on
CANCEL_REQUEST_FINISHES = "cancel-request-finishes-the-campaign"  # replay set v6 on
# replay set v6 on, asked only by campaigns with hosts at sites that have workers of their own:
# the leak sweep runs once per site, on that site's queue, over that site's hosts
SWEEP_PER_SITE = "sweep-per-site"
# deprecated: only the retired replay set v1 predates it (tests/replay/README.md)
SWEEP_ON_EVERY_END = "sweep-on-every-end"


def unhealthy_host(stages: list[tuple[str, str, str]]) -> str:
    """The host a cell gave up on because the inventory marked it unhealthy, if any."""
    for stage, status, reason in stages:
        if stage == "reserve" and status == "error" and reason.startswith("HostUnhealthy"):
            return reason.split("host ", 1)[1].split(" ", 1)[0] if "host " in reason else ""
    return ""


def read_result(r: CellResult) -> tuple[CellOutcome, list[tuple[str, str, str]]]:
    return CellOutcome.of(r), [(x.stage, x.status, x.reason) for x in r.stages]


def read_child_result(raw: RawValue) -> tuple[CellOutcome, list[tuple[str, str, str]]]:
    """Outcome and stage list of a child's CellResult, read as plain JSON: typed decoding of a
    full result costs ~8 ms inside the sandbox, which dominated a 2,000-cell campaign."""
    if raw.payload.metadata.get("encoding") != b"json/plain":  # a custom data converter: typed path
        return read_result(workflow.payload_converter().from_payload(raw.payload, CellResult))
    doc = json.loads(raw.payload.data)
    stages = [(x["stage"], x["status"], x.get("reason", "")) for x in doc.get("stages", [])]
    return CellOutcome.of_json(doc), stages


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


class CampaignRun:
    """One run of a campaign (up to its continue-as-new). Subclasses are the generations."""

    cells: Mapping[str, Cell]  # every cell of the campaign by id (the plan's matrix + added ones)

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
        self._local_in_flight = 0  # progress local activities not yet resolved
        self.kinds = {p.name: p.kind for p in inp.plan.platforms}
        # set once the run is closing (finish, continue-as-new): the refresh loop schedules nothing more
        self.closing = False
        self._searched: tuple[str, float] = ("", 0.0)  # (status, time) of the last visibility upsert

    # -- what a generation provides ---------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        raise NotImplementedError

    def summary(self) -> list[CellSummary]:
        """One short row per finished cell (unbounded)."""
        raise NotImplementedError

    def page(self, offset: int, limit: int) -> tuple[int, list[CellSummary]]:
        """(finished cells in all, up to ``limit`` rows from ``offset``), in matrix order."""
        raise NotImplementedError

    def fill_result(self, res: CampaignResult) -> None:
        """Put the cells' outcomes into a snapshot or the final result."""
        raise NotImplementedError

    def view(self) -> ControlView:
        """What the operator-action validators (``domain.control``) check a request against."""
        raise NotImplementedError

    def retry(self, req: RetryRequest) -> ControlResult:
        raise NotImplementedError

    def skip(self, req: SkipRequest) -> ControlResult:
        raise NotImplementedError

    def add_cell(self, cell: Cell) -> None:
        """Queue a cell the operator added (already appended to ``st.extra_cells``)."""
        raise NotImplementedError

    def has_pending(self) -> bool:
        raise NotImplementedError

    def pending_cells(self) -> list[Cell]:
        raise NotImplementedError

    def start_ready_cells(self) -> None:
        raise NotImplementedError

    def may_continue(self) -> bool:
        """Whether a run that must continue as new can do it now (or must wait for its cells)."""
        raise NotImplementedError

    async def continue_as_new(self, inp: CampaignInput) -> None:
        """Continue as new (never returns unless a cancel arrived meanwhile)."""
        raise NotImplementedError

    def start_background(self) -> None:
        """Loops the run keeps beside the schedule (after the inventory is loaded)."""

    def place_cells(self, snap: InventorySnapshot) -> None:
        """The first inventory snapshot is in: queue the cells, skip those no host can run."""
        raise NotImplementedError

    async def cancel_cells(self) -> None:
        """A cancel: stop the running cells (they clean up) and skip the pending ones."""
        raise NotImplementedError

    def cell_finished(self, report, result: RawValue) -> None:
        """A cell reported its result by signal (only generations that hand cells over)."""

    # -- queries ------------------------------------------------------------------------------------
    def progress(self) -> Progress:
        return Progress(
            campaign_id=self.campaign_id,
            name=self.plan.name,
            status=self.status,
            counts=self.counts(),
            running={c: f"{a.source_host} -> {a.target_host}" for c, a in self.running.items()},
            paused=self.st.paused,
            generation=self.st.generation,
            history_length=workflow.info().get_current_history_length(),
            stall_reason=self.stall_reason,
        )

    def results_page(self, req: ResultsPageRequest) -> ResultsPage:
        limit = max(1, min(req.limit, RESULTS_PAGE_MAX))
        offset = max(0, req.offset)
        total, rows = self.page(offset, limit)
        nxt = offset + len(rows) if offset + len(rows) < total else -1
        return ResultsPage(rows, total, nxt)

    def snapshot(self, finished_at: str = "") -> CampaignResult:
        """The campaign as it stands, in the form of its final result (``finished_at`` once it ends)."""
        res = CampaignResult(
            campaign_id=self.campaign_id,
            name=self.plan.name,
            hosts=self.st.hosts,
            status=self.status,
            started_at=self.st.started_at,
            finished_at=finished_at,
        )
        self.fill_result(res)
        return res

    # -- operator actions: applied at most once per request id -------------------------------------
    async def once(self, request_id: str, apply: Callable[[], ControlResult]) -> ControlResult:
        """Apply an operator action at most once per request id (a retried CLI call is a no-op)."""
        async with self.lock:
            if request_id and request_id in self.st.applied_updates:
                return ControlResult(False, f"request {request_id} already applied")
            result = apply()
            if request_id:
                self.st.applied_updates = (self.st.applied_updates + [request_id])[-APPLIED_KEYS_KEPT:]
            self.dirty = True
            return result

    def pause(self) -> ControlResult:
        self.st.paused = True
        return ControlResult(True, "paused: running cells finish, no new cells start")

    def resume(self) -> ControlResult:
        self.st.paused = False
        return ControlResult(True, "resumed")

    def cancel(self) -> ControlResult:
        self.cancel_requested = True
        return ControlResult(True, "cancelling: running cells clean up and release their hosts")

    def set_concurrency(self, req: ConcurrencyRequest) -> ControlResult:
        self.st.max_cells = req.max_cells
        return ControlResult(True, f"max_cells={req.max_cells}")

    def swap_host(self, req: SwapHostRequest) -> ControlResult:
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

    def add_cells(self, req: AddCellsRequest) -> ControlResult:
        added = []
        for s, t, i in req.cells:
            cid = matrix.cell_id(s, t, i)
            if cid in self.cells:
                continue
            cell = Cell(cid, s, t, i, list(self.plan.checks), matrix.fingerprint(self.plan, s, t, i))
            self.st.extra_cells.append(cell)
            added.append(cid)
            self.add_cell(cell)
        return ControlResult(True, f"added {len(added)} cells", added)

    def skipped_result(self, cid: str, reason: str) -> CellResult:
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

    # -- run: restore, schedule, continue, finish -------------------------------------------------
    async def run(self, inp: CampaignInput) -> CampaignResult:
        try:
            await self._restore()
            while True:
                await workflow.wait_condition(lambda: self.dirty or self.cancel_requested)
                step = await self._schedule(inp)
                if step == "finish":
                    break
                if step == "continue":
                    await self.continue_as_new(inp)
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
        self.start_background()
        await self._publish()

    def selections(self) -> dict[str, dict[str, str]]:
        return {p.name: {**p.select, "kind": p.kind} for p in self.plan.platforms}

    async def _schedule(self, inp: CampaignInput) -> str:
        """One pass: start what can start. Returns finish | continue | wait."""
        stalled_now = ""
        async with self.lock:
            self.dirty = False
            if self.cancel_requested or (not self.has_pending() and not self.running):
                return "finish"
            draining = (
                workflow.info().get_current_history_length() > inp.history_limit
                or workflow.info().is_continue_as_new_suggested()
            )
            if not self.st.paused and not draining:
                self.start_ready_cells()
            self.status = "paused" if self.st.paused else ("draining" if draining else "running")
            reason = self._stall_reason(draining)
            if reason != self.stall_reason:
                self.stall_reason = stalled_now = reason
            if reason:
                self.status = "stalled"
            if draining and self.may_continue():
                return "continue"
        if stalled_now and workflow.patched(WATCHDOG):
            # visible in the progress query and as a metric (an alert), not silence
            workflow.logger.warning("campaign stalled: %s", stalled_now)
            await self._publish()
        return "wait"

    def _stall_reason(self, draining: bool) -> str:
        """Pending cells, nothing running, nothing schedulable: why (the watchdog)."""
        if self.st.paused or draining or self.running or not self.has_pending():
            return ""
        return scheduling.why_unschedulable(
            self.pending_cells(),
            {h.name: h for h in self.st.hosts},
            self.st.platform_hosts,
            {p.name: p.kind for p in self.plan.platforms},
            self.limits(),
            frozenset(self.st.unavailable_hosts),
        )

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
        if self.cancel_requested:
            self.status = "cancelling"
            await self.cancel_cells()
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
            await workflow.wait_condition(self.quiet)
        return self.snapshot(finished_at=workflow.now().isoformat())

    def limits(self):
        limits = self.plan.concurrency
        if self.st.max_cells:
            limits = type(limits)(max_cells=self.st.max_cells, per_kind=limits.per_kind)
        return limits

    async def _load_inventory(self) -> None:
        plan = self.plan
        snap = await workflow.execute_activity(
            "load_inventory",
            InventoryRequest(plan.inventory, self.selections(), netbox=dict(plan.netbox)),
            result_type=InventorySnapshot,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=ACT_RETRY,
        )
        self.st.hosts = snap.hosts
        self.st.platform_hosts = snap.platform_hosts
        self.st.inventory_cursor = snap.cursor
        self.place_cells(snap)

    def cell_input(self, cell: Cell, a: scheduling.Assignment, hosts: dict, attempt: int) -> CellInput:
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

    def quiet(self) -> bool:
        """No progress local activity in flight and no update handler running: a close (complete,
        continue-as-new) may be the last command of its task."""
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
        counts = counts or self.counts()
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
