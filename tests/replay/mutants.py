"""Deliberately changed copies of CellWorkflow, registered under its name, for the replay tests."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.messages import CellInput, ProgressReport
    from domain.model import CellResult
    from workflows.cell import CellWorkflow


async def _extra_activity(inp: CellInput) -> None:
    # an innocent-looking addition: report progress before the cache lookup
    await workflow.execute_activity(
        "publish_progress",
        ProgressReport(inp.campaign_id, {}, True),
        start_to_close_timeout=timedelta(seconds=10),
    )


@workflow.defn(name="CellWorkflow")
class UnpatchedCellWorkflow(CellWorkflow):
    """The change made without ``workflow.patched``: histories recorded before it must not replay."""

    @workflow.run
    async def run(self, inp: CellInput) -> CellResult:
        await _extra_activity(inp)
        return await super().run(inp)


@workflow.defn(name="CellWorkflow")
class PatchedCellWorkflow(CellWorkflow):
    """The same change behind ``workflow.patched``: old histories take the old path and replay."""

    @workflow.run
    async def run(self, inp: CellInput) -> CellResult:
        if workflow.patched("progress-before-cache-lookup"):
            await _extra_activity(inp)
        return await super().run(inp)
