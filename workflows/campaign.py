"""The campaign: expands the matrix, schedules cells onto leased hosts as child workflows, takes
operator control, and continues-as-new before its history grows past Temporal's limits.

Idiom from temporalio/samples-python (message_passing/safe_message_handlers): all state that crosses
continue-as-new lives in one dataclass (``CampaignState``); ``@workflow.init`` builds it before any
handler runs; one update per operator action, each with its own request/result dataclass and a
validator (``domain.control``) that refuses bad requests before they reach history; a lock guards
state touched across awaits; handlers finish before continue-as-new.

One file per generation (temporalio/samples-python ``patching/``): this class is only what
Temporal registers (queries, updates, the signal, ``run``); it picks the generation a run takes,
once, from the patch ``reattach-across-continue-as-new``, and forwards every handler to it:

- ``campaign_v5.py``: the live generation, every new campaign (replay set v5 on);
- ``campaign_v4.py``: runs of replay sets v2-v4, replayed only; deleted when v4 retires;
- ``campaign_base.py``: what both share (the run loop: restore, schedule, continue, finish);
- ``campaign_steer.py``: the legacy ``steer`` update, forwarding to the typed updates.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import RawValue

with workflow.unsafe.imports_passed_through():
    from domain import control
    from domain.control import (
        AddCellsRequest,
        CancelRequest,
        ConcurrencyRequest,
        ControlResult,
        PauseRequest,
        ResumeRequest,
        RetryRequest,
        SkipRequest,
        SwapHostRequest,
    )
    from domain.messages import CampaignInput, CellReport, ResultsPage, ResultsPageRequest
    from domain.model import CampaignResult, CellSummary
    from workflows.campaign_base import REATTACH, CampaignRun, Progress
    from workflows.campaign_steer import LegacySteer, SteerRequest, SteerResponse
    from workflows.campaign_v4 import DrainingRun
    from workflows.campaign_v5 import LiveRun
    from workflows.reporting import CELL_FINISHED

__all__ = ["CampaignWorkflow", "Progress", "SteerRequest", "SteerResponse"]


@workflow.defn
class CampaignWorkflow(LegacySteer):
    @workflow.init
    def __init__(self, inp: CampaignInput) -> None:
        # Runs recorded before replay set v5 keep their whole state in ``st`` and drain before
        # continuing as new; a new run (and every run it continues into) takes the live path.
        generation = LiveRun if workflow.patched(REATTACH) else DrainingRun
        self.campaign: CampaignRun = generation(inp)

    # -- queries --------------------------------------------------------------------------------
    @workflow.query
    def progress(self) -> Progress:
        return self.campaign.progress()

    @workflow.query
    def results(self) -> list[CellSummary]:
        """One short row per finished cell; full results are in the result store. Unbounded (a
        50,000-cell campaign answers ~15 MB): use ``results_page`` or ``snapshot``."""
        return self.campaign.summary()

    @workflow.query
    def results_page(self, req: ResultsPageRequest) -> ResultsPage:
        """Up to ``RESULTS_PAGE_MAX`` rows of finished cells from ``req.offset``, in matrix order."""
        return self.campaign.results_page(req)

    @workflow.query
    def snapshot(self) -> CampaignResult:
        """The campaign as it stands, in the form of its final result (bounded from v5 on: ``shape``
        and ``book``, no row per cell); ``result_store.attach`` reads it like a finished one."""
        return self.campaign.snapshot()

    # -- operator control: one update per action, validated against the campaign's view ---------
    @workflow.update
    async def pause(self, req: PauseRequest) -> ControlResult:
        return await self.campaign.once(req.request_id, self.campaign.pause)

    @pause.validator
    def _check_pause(self, req: PauseRequest) -> None:
        control.check_open(self.campaign.view())

    @workflow.update
    async def resume(self, req: ResumeRequest) -> ControlResult:
        return await self.campaign.once(req.request_id, self.campaign.resume)

    @resume.validator
    def _check_resume(self, req: ResumeRequest) -> None:
        control.check_open(self.campaign.view())

    @workflow.update
    async def cancel(self, req: CancelRequest) -> ControlResult:
        return await self.campaign.once(req.request_id, self.campaign.cancel)

    @cancel.validator
    def _check_cancel(self, req: CancelRequest) -> None:
        control.check_open(self.campaign.view())

    @workflow.update
    async def set_concurrency(self, req: ConcurrencyRequest) -> ControlResult:
        return await self.campaign.once(req.request_id, lambda: self.campaign.set_concurrency(req))

    @set_concurrency.validator
    def _check_set_concurrency(self, req: ConcurrencyRequest) -> None:
        control.check_concurrency(self.campaign.view(), req)

    @workflow.update
    async def retry(self, req: RetryRequest) -> ControlResult:
        return await self.campaign.once(req.request_id, lambda: self.campaign.retry(req))

    @retry.validator
    def _check_retry(self, req: RetryRequest) -> None:
        control.check_retry(self.campaign.view(), req)

    @workflow.update
    async def skip(self, req: SkipRequest) -> ControlResult:
        return await self.campaign.once(req.request_id, lambda: self.campaign.skip(req))

    @skip.validator
    def _check_skip(self, req: SkipRequest) -> None:
        control.check_skip(self.campaign.view(), req)

    @workflow.update
    async def swap_host(self, req: SwapHostRequest) -> ControlResult:
        return await self.campaign.once(req.request_id, lambda: self.campaign.swap_host(req))

    @swap_host.validator
    def _check_swap_host(self, req: SwapHostRequest) -> None:
        control.check_swap_host(self.campaign.view(), req)

    @workflow.update
    async def add_cells(self, req: AddCellsRequest) -> ControlResult:
        return await self.campaign.once(req.request_id, lambda: self.campaign.add_cells(req))

    @add_cells.validator
    def _check_add_cells(self, req: AddCellsRequest) -> None:
        control.check_add_cells(self.campaign.view(), req)

    # -- cells handed over across continue-as-new report here -----------------------------------
    @workflow.signal(name=CELL_FINISHED)
    def cell_finished(self, report: CellReport, result: RawValue) -> None:
        """A cell this run inherited (or one that heard the hand-over before it finished) is done;
        ``result`` is its CellResult, passed to the store untouched."""
        self.campaign.cell_finished(report, result)

    @workflow.run
    async def run(self, inp: CampaignInput) -> CampaignResult:
        return await self.campaign.run(inp)
