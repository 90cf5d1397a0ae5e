"""A cell workflow for simulated labs: same input and result as ``CellWorkflow``, but every stage
only sleeps its simulated duration (``domain.simulation.stage_durations``, deterministic in the cell
id), and every check passes. Plugged into a campaign with ``CampaignInput.cell_workflow``; under
Temporal's time-skipping test server a month-long campaign replays in minutes.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain import simulation
    from domain.messages import CellInput
    from domain.model import CellResult, CheckResult, Grade, StageRecord
    from workflows.cell import base_result, lookup_cached
    from workflows.reporting import ReportsToCampaign


@workflow.defn(name="SimulatedCellWorkflow")
class SimulatedCellWorkflow(ReportsToCampaign):
    def __init__(self) -> None:
        self._stage = ""

    @workflow.query
    def current_stage(self) -> str:
        return self._stage

    @workflow.run
    async def run(self, inp: CellInput) -> CellResult:
        return await self.reported(inp, await self._simulate(inp))

    async def _simulate(self, inp: CellInput) -> CellResult:
        cell = inp.cell
        # same reuse rule as the real cell: an identical passed cell is not redone
        base = base_result(inp)
        cached = await lookup_cached(inp, base)
        if cached is not None:
            return cached
        durations = simulation.stage_durations(cell, inp.image, inp.source.kind, inp.target.kind)
        # One timer for the whole cell: the campaign only sees when a cell ends, and a timer per
        # stage would cost eleven workflow tasks per cell (half the wall time of a 2,000-cell run)
        # without changing a single scheduling decision.
        self._stage = "simulated"
        try:
            await workflow.sleep(sum(durations.values()))
        except asyncio.CancelledError:
            # like the real cell: a cancelled cell completes with skipped grades (and reports
            # them, if its campaign asked), it does not just vanish
            base.checks = [CheckResult(c, Grade.SKIPPED, "cancelled by operator") for c in cell.checks]
            return base
        base.stages = [StageRecord(s, "ok", d) for s, d in durations.items()]
        base.checks = [CheckResult(c, Grade.PASS, "simulated") for c in cell.checks]
        return base


@workflow.defn(name="CellWorkflow")
class SimulatedAsCellWorkflow(SimulatedCellWorkflow):
    """The simulated cell under the real cell's type name, for a worker that simulates the whole lab.

    Why: a simulation worker registers this instead of the real ``CellWorkflow`` so that a
    campaign started without ``cell_workflow`` (or a run of replay sets v2-v4, which dropped
    ``cell_workflow`` at continue-as-new) runs simulated cells too and never calls a stage.
    """

    @workflow.run
    async def run(self, inp: CellInput) -> CellResult:
        return await super().run(inp)
